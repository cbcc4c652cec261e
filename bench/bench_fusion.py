"""Fused trials against separate trials: time per member-step, trials per hour, memory.

For K = 1, 2, 4, 8, 16, 32 the script times

* fused: one process trains K MisMatch members as one model (mismatch.fusion: vmap over
  stacked weights, masked Adam), on random two-stream batches (1 labelled + 1 unlabelled);
* separate: K trials trained apart, each with the one training loop's step
  (``Method.training_step`` + ``Optimization.step``). By default K processes run at once
  (what Ray's packing does; they warm up, then time their steps together);
  ``--separate sequential`` (the default with ``--quick``) runs the K trials one after
  another in this process, which on a compute-bound CPU is the same throughput without K
  process start-ups.

A member-step is one optimiser step of one trial. trials/hour = 3600 / (seconds per
member-step x ``--trial-steps``), the paper's 180k steps per trial by default. Memory per
member: on CUDA the peak allocated memory / K; on a CPU the parameter, gradient and Adam
state (activations not counted, marked "state").

After the table, the Table I estimate from the measured rows only: device-hours of
``--table-trials`` (400) trials x ``--trial-steps`` steps x seconds per member-step, at the
best fused K, at K = 1 separate (one trial per device) and at the best separate K.

Run: python bench/bench_fusion.py [--device cpu|cuda] [--quick] [--ks 1 2 4] [--size 176] [--width 24]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from functools import partial

import torch

from mismatch.config import TrainSpec, load_trial_spec
from mismatch.fusion.optim import AdamSettings, MaskedAdam
from mismatch.methods import Batch, build_method
from mismatch.optim import Optimization
from mismatch.trial.fused import FusedModel


def _batch(size: int, device: torch.device) -> Batch:
    image = torch.randn(2, 1, size, size, device=device)
    label = (torch.rand(2, 1, size, size, device=device) > 0.9).float()
    return Batch(image, label, torch.tensor([True, False], device=device), n_labelled=1)


def _methods(k: int, width: int, device: torch.device) -> list:
    spec = load_trial_spec({"data": {"synthetic": {}}, "method": {"name": "mismatch", "width": width}})
    return [build_method(spec.method, 1).to(device) for _ in range(k)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(step, n: int, warmup: int, device: torch.device, ready=None) -> float:
    """Median seconds of ``step()`` over ``n`` calls after ``warmup``; ``ready()``, if given,
    is called between the warm-up and the timed calls."""
    for _ in range(warmup):
        step()
    if ready is not None:
        _sync(device)
        ready()
    times = []
    for _ in range(n):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fused_step_time(k: int, args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(seconds per fused step of k members, MB per member)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    methods = _methods(k, args.width, device)
    model = FusedModel(methods, {"alpha": [0.002 * (i + 1) for i in range(k)]})
    adam = MaskedAdam(model.params, AdamSettings(), foreach={"on": True, "off": False, "auto": None}[args.adam_foreach])
    optim = Optimization(methods[0].configure_optimizers(TrainSpec(), 1), TrainSpec(), device)
    batches = [_batch(args.size, device) for _ in range(k)]
    everyone = {n: torch.arange(k).numpy() for n in model.params}
    lrs = {n: torch.full((k,), 2e-5, dtype=torch.float64).numpy() for n in model.params}

    def step() -> None:
        _, grads = model.losses_and_grads(list(range(k)), batches, 0, device, optim)
        adam.step(grads, everyone, lrs)

    seconds = _timed(step, args.steps, args.warmup, device)
    if device.type == "cuda":
        mb = torch.cuda.max_memory_allocated(device) / 2**20 / k
    else:
        mb = 4 * sum(p.numel() for p in model.params.values()) * 4 / 2**20 / k  # weights, grads, 2 moments
    return seconds, mb


def solo_step_time(args: argparse.Namespace, device: torch.device, ready=None) -> float:
    """Seconds per step of one trial trained alone (the one loop's step)."""
    method = _methods(1, args.width, device)[0].train()
    optim = Optimization(method.configure_optimizers(TrainSpec(), 1), TrainSpec(), device)
    batch = _batch(args.size, device)
    step = lambda: optim.step(method.training_step(batch, 0)["loss"])  # noqa: E731
    return _timed(step, args.steps, args.warmup, device, ready)


def _wait_for_go() -> None:
    """A separate-process worker: say it is warmed up, then wait until every worker is."""
    print("ready", flush=True)
    sys.stdin.readline()


def separate_processes_time(k: int, args: argparse.Namespace) -> float:
    """Wall seconds per step-round of k concurrent processes, each timing its own steps."""
    cmd = [sys.executable, __file__, "--solo-worker", "--device", args.device, "--size", str(args.size),
           "--width", str(args.width), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(k)]
    # a start barrier: the k processes time their steps together, not staggered by start-up
    if any(p.stdout.readline().strip() != "ready" for p in procs):
        raise SystemExit(f"a --solo-worker process failed before its timed steps (exit codes {[p.wait() for p in procs]})")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    # the slowest process's step time: the k trials advance one step each in that time
    return max(r["step_s"] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="32x32 width-4 networks, 7 timed steps (under 5 min on 2 cores)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--size", type=int, default=176)
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--trial-steps", type=int, default=180_000, help="optimiser steps of one trial (paper: 180k)")
    parser.add_argument("--table-trials", type=int, default=400, help="trials of the Table I estimate (paper: 400)")
    parser.add_argument("--separate", choices=("processes", "sequential"), default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--adam-foreach", choices=("on", "off", "auto"), default="auto",
                        help="the fused MaskedAdam's torch._foreach path (auto: on CUDA only)")
    parser.add_argument("--solo-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.size, args.width, args.steps, args.warmup = 32, 4, 7, 2
    separate = args.separate or ("sequential" if args.quick else "processes")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.solo_worker:
        print(json.dumps({"step_s": solo_step_time(args, device, _wait_for_go)}))
        return
    print(f"device {args.device}, {args.size}x{args.size}, mm width {args.width}, batch 1+1, median of {args.steps} steps, "
          f"separate = {separate}, torch threads {torch.get_num_threads()}")
    header = f"{'K':>3} {'fused ms/member-step':>21} {'separate ms/member-step':>24} {'speed-up':>8} " \
             f"{'fused trials/h':>15} {'separate trials/h':>18} {'MB/member':>10}"
    print(header)
    rows = []
    for k in args.ks:
        fused, mb = fused_step_time(k, args, device)
        per_fused = fused / k
        # measured next to each fused K (a loaded machine's speed drifts): side by side
        per_separate = solo_step_time(args, device) if separate == "sequential" else separate_processes_time(k, args) / k
        rate = lambda s: 3600 / (s * args.trial_steps)  # noqa: E731
        kind = "" if device.type == "cuda" else " state"
        print(f"{k:>3} {per_fused * 1e3:>21.2f} {per_separate * 1e3:>24.2f} {per_separate / per_fused:>8.2f} "
              f"{rate(per_fused):>15.3f} {rate(per_separate):>18.3f} {mb:>10.2f}{kind}", flush=True)
        rows.append((k, per_fused, per_separate))
    print_table_one(rows, args, separate)


def table_one_hours(trials: int, trial_steps: int, seconds_per_member_step: float) -> float:
    """Device-hours of ``trials`` trials of ``trial_steps`` optimiser steps each."""
    return trials * trial_steps * seconds_per_member_step / 3600


def print_table_one(rows: list[tuple[int, float, float]], args: argparse.Namespace, separate: str) -> None:
    """The Table I estimate from the measured (K, fused s, separate s per member-step) rows."""
    if not rows:
        return
    unit = "GPU-hours" if args.device == "cuda" else "CPU-hours (this machine)"
    hours = partial(table_one_hours, args.table_trials, args.trial_steps)
    print(f"Table I estimate: {args.table_trials} trials x {args.trial_steps} steps x measured s/member-step / 3600 "
          f"({unit}, one device; separate = {separate})")
    k_fused, fused, _ = min(rows, key=lambda r: r[1])
    print(f"  fused, best K = {k_fused}: {hours(fused):.1f} {unit} ({fused * 1e3:.2f} ms/member-step)")
    solo = next((r[2] for r in rows if r[0] == 1), None)
    if solo is None:
        print("  separate, K = 1: not measured (add 1 to --ks)")
    else:
        print(f"  separate, K = 1 (one trial per device): {hours(solo):.1f} {unit} ({solo * 1e3:.2f} ms/member-step)")
    k_sep, _, sep = min(rows, key=lambda r: r[2])
    print(f"  separate, best K = {k_sep}: {hours(sep):.1f} {unit} ({sep * 1e3:.2f} ms/member-step)")


if __name__ == "__main__":
    main()
