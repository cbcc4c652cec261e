"""Fractional GPUs through Ray Tune: the same trials with `gpu: 1` and with `gpu: 0.25`.

Runs one small study twice through `mismatch study run` on an embedded local Ray: first
each trial asks for a whole GPU (one at a time), then for a quarter (four share the GPU).
Prints the wall time of each, the most trials that ran at once (from the rows' start and end
times) and the device the trials used. On a machine without a GPU the trials fall back to
the CPU, so the two runs then measure CPU packing instead.

Run: python bench/bench_ray_packing.py [--trials 8] [--size 176] [--epochs 2] [--gpus 1 0.25]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml


def study(name: str, gpu: float, args: argparse.Namespace) -> dict:
    """A MisMatch study of ``args.trials`` folds on a cached vessel phantom."""
    return {
        "name": name,
        "base": {
            "data": {"synthetic": {"kind": "vessels", "cases": max(args.trials, 7), "size": [args.size, args.size],
                                   "slices": 24}},
            "protocol": {"unlabelled_cases": 3, "validation_cases": 1, "test_cases": 2},
            "train": {"epochs": args.epochs, "snapshot_k": 1, "lr": 0.001},
        },
        "methods": [{"name": "mismatch", "width": args.width}],
        "grid": {"labelled_slices": [10], "fold": list(range(args.trials))},
        "resources": {"cpu": args.cpu, "gpu": gpu},
    }


def max_concurrent(trials: pd.DataFrame) -> int:
    """Most trials whose [started_at, finished_at] intervals overlap."""
    events = [(pd.Timestamp(t), +1) for t in trials["started_at"]] + [(pd.Timestamp(t), -1) for t in trials["finished_at"]]
    running = best = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        best = max(best, running)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--size", type=int, default=176)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--cpu", type=float, default=2)
    parser.add_argument("--gpus", type=float, nargs="+", default=[1.0, 0.25])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MISMATCH_CACHE"] = os.path.join(tmp, "cache")
        from mismatch.config import SynthSpec
        from mismatch.data import synthetic_dataset

        synthetic_dataset(SynthSpec(kind="vessels", cases=max(args.trials, 7), size=(args.size, args.size), slices=24))
        rows = []
        for gpu in args.gpus:
            name = f"pack-{gpu:g}".replace(".", "_")
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(study(name, gpu, args)))
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "mismatch", "study", "run", str(path), "--storage",
                                   os.path.join(tmp, "runs")], capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode:
                raise SystemExit(proc.stdout + proc.stderr)
            trials = pd.read_parquet(os.path.join(tmp, "runs", name, "trials"))
            rows.append((gpu, wall, max_concurrent(trials), trials["device"].iloc[0], trials["peak_memory_mb"].max(),
                         len(trials)))
    base = rows[0][1]
    print(f"{args.trials} MisMatch trials (width {args.width}, {args.size}x{args.size}, {args.epochs} epochs), "
          f"cpu {args.cpu:g} per trial, embedded local Ray")
    print(f"{'gpu/trial':>9s} {'wall s':>8s} {'speed-up':>9s} {'most at once':>13s} {'peak MB':>8s}  device")
    for gpu, wall, most, device, mem, n in rows:
        print(f"{gpu:9g} {wall:8.1f} {base / wall:8.2f}x {most:13d} {mem:8.0f}  {device} ({n} trials)")


if __name__ == "__main__":
    main()
