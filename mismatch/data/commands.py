"""Command-line glue for ``mismatch data ...`` (argparse only; the lead's cli.py wires it).

Usage from ``cli.py``::

    data = subparsers.add_parser("data").add_subparsers(dest="data_command", required=True)
    configure_synth_parser(data.add_parser("synth", help="write a synthetic phantom dataset"))
    args = parser.parse_args(argv)
    return args.func(args)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mismatch.data.synth import write_synthetic_dataset


def configure_synth_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``mismatch data synth KIND OUT`` and set ``func=run_synth``."""
    parser.add_argument("kind", choices=("vessels", "tumours"), help="phantom kind")
    parser.add_argument("out", type=Path, help="output folder (MSD / nnU-Net raw layout)")
    parser.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                        help="slice size in pixels (default 64 64)")
    parser.add_argument("--slices", type=int, default=24, help="slices per case (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    parser.set_defaults(func=run_synth)
    return parser


def run_synth(args: argparse.Namespace) -> int:
    """Write the dataset described by ``args``; print where and how long. Returns 0."""
    start = time.perf_counter()
    out = synth_command(args.kind, args.out, args.cases, tuple(args.size), args.slices, args.seed,
                        args.overwrite)
    print(f"wrote {args.cases} {args.kind} cases ({args.size[0]}x{args.size[1]}x{args.slices}, "
          f"seed {args.seed}) to {out} in {time.perf_counter() - start:.1f}s")
    return 0


def synth_command(
    kind: str,
    out: str | Path,
    cases: int = 10,
    size: tuple[int, int] = (64, 64),
    slices: int = 24,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """``mismatch data synth KIND OUT [--cases --size H W --slices --seed --overwrite]``."""
    return write_synthetic_dataset(out, kind, cases, size=size, slices=slices, seed=seed,
                                   overwrite=overwrite)
