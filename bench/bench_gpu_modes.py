"""Execution modes of one MisMatch training step side by side: eager, channels_last, bf16, compile, CUDA graphs.

Times one optimiser step of one MisMatch trial (mm, width 24, 176x176, batch 1 labelled +
1 unlabelled, Adam; the one loop's step: ``Method.training_step`` under the step's autocast,
then ``Optimization.step``) and of a fused group of K = 8 such trials (mismatch.fusion:
``FusedModel`` + ``MaskedAdam``, as ``bench_fusion.fused_step_time``), in these modes:

* eager: float32, default memory format (the reference row of its group);
* channels_last: the model and the inputs in channels_last;
* bf16: the project's ``train.precision: bf16`` (``Optimization.autocast``: CUDA only);
* compile: ``torch.compile`` (default mode) of the training step's forward;
* reduce-overhead: ``torch.compile(mode="reduce-overhead")`` (CUDA graphs; CUDA only).

Each row runs in its own process (a fresh peak-memory count; a crash, a hang past
``--row-timeout`` or a broken CUDA context cannot take the other rows with it) and prints
the median ms per step over ``--steps`` steps after ``--warmup`` untimed ones (compilation
and CUDA-graph recording happen in the warm-up), ms per member-step, the speed-up over its
group's eager row and the peak memory (CUDA: ``max_memory_allocated``; CPU: the process's
peak resident set). A mode that does not apply or raises prints ``not supported: <reason>``.

Run: python bench/bench_gpu_modes.py [--device cpu|cuda] [--quick] [--k 8] [--modes eager bf16 ...]
``--quick``: 32x32, width-4 networks, few steps (on a CPU in under 3 minutes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from bench_fusion import _batch, _methods, _timed  # bench/ is on sys.path when this file runs
from torch.func import vmap

from mismatch.config import TrainSpec
from mismatch.fusion.optim import AdamSettings, MaskedAdam
from mismatch.methods import Batch
from mismatch.optim import Optimization
from mismatch.runtime import peak_memory_mb, reset_peak_memory
from mismatch.trial.fused import FusedModel

MODES = ("eager", "channels_last", "bf16", "compile", "reduce-overhead")
Step = Callable[[], None]


def not_applicable(group: str, mode: str, device: str) -> str | None:
    """Why ``mode`` does not apply to ``group`` on ``device`` (the row's reason), or None."""
    if mode == "bf16" and device != "cuda":
        return "train.precision bf16 is CUDA only (Optimization trains in float32 on a CPU)"
    if mode == "reduce-overhead" and device != "cuda":
        return "CUDA graphs (reduce-overhead) are CUDA only"
    if mode == "channels_last" and group == "fused":
        return ("stacked (K, ...) weights and inputs are 5-D; vmap's grouped convolution "
                "has no channels_last layout to ask for")
    return None


def _optimization(method, precision: str, device: torch.device) -> Optimization:
    """The loop's optimiser for ``method`` (Adam, constant lr) in ``precision``."""
    train = TrainSpec(precision=precision)
    return Optimization(method.configure_optimizers(train, 1), train, device)


def _compile(fn: Callable, mode: str) -> Callable:
    """``fn`` compiled for ``mode`` ("compile" or "reduce-overhead"), or ``fn`` for the others."""
    if mode == "compile":
        return torch.compile(fn)
    if mode == "reduce-overhead":
        return torch.compile(fn, mode="reduce-overhead")
    return fn


def solo_step(mode: str, args: argparse.Namespace, device: torch.device) -> Step:
    """One trial's loop step (training_step under autocast, then Optimization.step) in ``mode``."""
    method = _methods(1, args.width, device)[0].train()
    batch = _batch(args.size, device)
    if mode == "channels_last":
        method = method.to(memory_format=torch.channels_last)
        cl = torch.channels_last
        batch = Batch(batch.image.contiguous(memory_format=cl), batch.label.contiguous(memory_format=cl),
                      batch.labelled, batch.n_labelled)
    optim = _optimization(method, "bf16" if mode == "bf16" else "none", device)
    forward = _compile(method.training_step, mode)

    def step() -> None:
        if mode == "reduce-overhead":  # a new iteration: the graphs may reuse the last one's outputs
            torch.compiler.cudagraph_mark_step_begin()
        with optim.autocast():
            losses = forward(batch, 0)
        optim.step(losses["loss"])

    return step


def fused_step(mode: str, args: argparse.Namespace, device: torch.device) -> Step:
    """One step of a fused group of ``args.k`` members (losses, gradients, masked Adam) in ``mode``."""
    k = args.k
    methods = _methods(k, args.width, device)
    model = FusedModel(methods, {"alpha": [0.002 * (i + 1) for i in range(k)]})
    adam = MaskedAdam(model.params, AdamSettings())
    optim = _optimization(methods[0], "bf16" if mode == "bf16" else "none", device)
    batches = [_batch(args.size, device) for _ in range(k)]
    everyone = {n: np.arange(k) for n in model.params}
    lrs = {n: np.full(k, 2e-5) for n in model.params}
    if mode in ("eager", "bf16"):  # the engine's own step
        def step() -> None:
            _, grads = model.losses_and_grads(list(range(k)), batches, 0, device, optim)
            adam.step(grads, everyone, lrs)
        return step
    # compiled: FusedModel.losses_and_grads with its vmapped member step compiled
    member = partial(model._member_losses, n_labelled=batches[0].n_labelled, epoch=0)
    losses_of = _compile(vmap(member, randomness="different"), mode)
    image = torch.stack([b.image for b in batches])
    label = torch.stack([b.label for b in batches])
    names = list(model.params)

    def compiled_step() -> None:
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        with optim.autocast():
            losses = losses_of(model.params, model.buffers, model.scalars, image, label)
        grads = torch.autograd.grad(losses["loss"].sum(), [model.params[n] for n in names], allow_unused=True)
        adam.step(dict(zip(names, grads)), everyone, lrs)

    return compiled_step


def measure_row(group: str, mode: str, args: argparse.Namespace) -> dict:
    """{"ms": median ms per step, "mb": peak MB, "note": compiled graphs} of one row, or {"error": reason}."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    reset_peak_memory(device)
    try:
        step = (fused_step if group == "fused" else solo_step)(mode, args, device)
        seconds = _timed(step, args.steps, args.warmup, device)
    except Exception as error:  # noqa: BLE001 - any failure of a mode is that row's result
        return {"error": _one_line(f"{type(error).__name__}: {error}")}
    if mode not in ("compile", "reduce-overhead"):
        return {"ms": seconds * 1e3, "mb": peak_memory_mb(device), "note": ""}
    graphs, note = _compiled_graphs()
    if not graphs:  # dynamo fell back to eager for the whole step: the row would time eager
        return {"error": f"torch.compile compiled no graph and ran eager ({note}; where: TORCH_LOGS=graph_breaks)"}
    return {"ms": seconds * 1e3, "mb": peak_memory_mb(device), "note": note}


def _compiled_graphs() -> tuple[int, str]:
    """How many graphs dynamo compiled in this process, and a note with its graph breaks."""
    from torch._dynamo.utils import counters

    graphs = counters["stats"].get("unique_graphs", 0)
    breaks = counters["graph_break"]
    first = f", first: {_one_line(next(iter(breaks)), 120)}" if breaks else ""
    return graphs, f"{graphs} graph(s), {sum(breaks.values())} graph break(s){first}"


def _one_line(text: str, limit: int = 200) -> str:
    line = next((s.strip() for s in text.strip().splitlines() if s.strip()), "no message")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def run_row(group: str, mode: str, args: argparse.Namespace) -> dict:
    """``measure_row`` in a fresh process, within ``--row-timeout`` seconds."""
    cmd = [sys.executable, __file__, "--row", group, mode, "--device", args.device, "--size", str(args.size),
           "--width", str(args.width), "--k", str(args.k), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.row_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not measured: over the {args.row_timeout:.0f} s row limit (compile or steps hung)"}
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return {"error": f"process failed (exit {done.returncode}): {_one_line(done.stderr[-2000:] or 'no output')}"}
    return json.loads(lines[-1])


def row_order(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(group, mode) rows, eager first, the compile rows (slow to build) last: a time limit
    cuts them before the cheap ones."""
    groups = ["solo"] + (["fused"] if args.k > 0 else [])
    slow = ("compile", "reduce-overhead")
    first = [(g, m) for g in groups for m in args.modes if m not in slow]
    return first + [(g, m) for g in groups for m in args.modes if m in slow]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="32x32 width-4 networks, 5 timed steps after 3")
    parser.add_argument("--size", type=int, default=176)
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--k", type=int, default=8, help="members of the fused group (0: no fused rows)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20; --quick 5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps: compile, CUDA-graph recording (default 5; --quick 3)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--row-timeout", type=float, default=150.0, help="seconds per row, its process start included")
    parser.add_argument("--row", nargs=2, metavar=("GROUP", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.size, args.width = 32, 4
    args.steps = args.steps or (5 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (3 if args.quick else 5)
    if args.row:
        print(json.dumps(measure_row(*args.row, args)))
        return
    print(f"device {args.device}, mm width {args.width}, {args.size}x{args.size}, batch 1+1, Adam, "
          f"median of {args.steps} steps after {args.warmup} warm-up, fused K = {args.k}; torch {torch.__version__}")
    print(f"{'group':<10} {'mode':<16} {'ms/step':>9} {'ms/member-step':>15} {'vs eager':>9} {'peak MB':>9}")
    eager_ms: dict[str, float] = {}
    for group, mode in row_order(args):
        start = time.perf_counter()
        why = not_applicable(group, mode, args.device)
        row = {"error": why} if why else run_row(group, mode, args)
        k = args.k if group == "fused" else 1
        name = f"{group} K={k}" if group == "fused" else group
        if "error" in row:
            reason = row["error"] if row["error"].startswith("not ") else f"not supported: {row['error']}"
            print(f"{name:<10} {mode:<16} {reason}", flush=True)
            continue
        if mode == "eager":
            eager_ms[group] = row["ms"]
        speed = f"{eager_ms[group] / row['ms']:.2f}x" if group in eager_ms else "-"
        note = f"; {row['note']}" if row["note"] else ""
        print(f"{name:<10} {mode:<16} {row['ms']:>9.2f} {row['ms'] / k:>15.2f} {speed:>9} {row['mb']:>9.0f}"
              f"   ({time.perf_counter() - start:.0f} s{note})", flush=True)
    print("peak MB: CUDA max_memory_allocated" if args.device == "cuda" else "peak MB: the row process's peak RSS")


if __name__ == "__main__":
    main()
