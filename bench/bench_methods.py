"""Training-step time of every registered method on the same input, relative to MisMatch.

Run: python bench/bench_methods.py [--reps 10] [--size 176] [--width 24] [--methods a,b,...]
One step is what the training loop does per batch (``training_step``, the optimisers' step
with its backward pass, ``after_step``) on a two-stream batch: one labelled and one
unlabelled slice (batch_size 1, the paper's), in each method's steady stage (BCP after its
pre-training). Methods are timed interleaved, round after
round, so that machine noise hits them alike; the table gives medians and the ratio to
MisMatch's median. CPU, and CUDA when present.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mismatch.config import METHODS, TrainSpec
from mismatch.methods import Batch
from mismatch.methods.factory import build_method
from mismatch.optim import Optimization

WARMUP = 2
# Settings that put a method in its costliest (steady) stage from the first step: BCP's first
# quarter of the steps is a labelled-only stage that costs a supervised step.
STEADY = {"bcp": {"pretrain_steps": 0}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(name: str, width: int, device: torch.device, steps_per_epoch: int = 100):
    """A closure running one training step of method ``name`` (default settings, ``width``)."""
    fields = METHODS.get(name).model_fields
    config = METHODS.get(name)(**({"width": width} if "width" in fields else {}), **STEADY.get(name, {}))
    method = build_method(config, in_channels=1).to(device)
    train = TrainSpec(stream="two-stream")
    optim = Optimization(method.configure_optimizers(train, steps_per_epoch), train, device)
    method.train()

    def step(batch: Batch) -> None:
        with optim.autocast():
            losses = method.training_step(batch, 10)
        optim.step(losses["loss"])
        method.after_step()

    return step


def bench(device: torch.device, names: list[str], size: int, width: int, reps: int) -> dict[str, float]:
    """Median seconds per training step of each method on ``device``."""
    torch.manual_seed(0)
    image = torch.randn(2, 1, size, size, device=device)
    label = torch.zeros(2, 1, size, size, device=device)
    label[0, :, size // 4: size // 2, size // 4: size // 2] = 1
    batch = Batch(image, label, torch.tensor([True, False], device=device), n_labelled=1)
    steps = {name: make_step(name, width, device) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps + WARMUP):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step(batch)
            _sync(device)
            if rep >= WARMUP:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--size", type=int, default=176)
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--methods", default=None, help="comma-separated names (default: every registered method)")
    args = parser.parse_args()
    names = args.methods.split(",") if args.methods else METHODS.names()
    if "mismatch" not in names:
        names.append("mismatch")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.size}x{args.size}, width {args.width}, "
          f"1 labelled + 1 unlabelled slice per step, median of {args.reps}")
    for device in devices:
        medians = bench(device, names, args.size, args.width, args.reps)
        ref = medians["mismatch"]
        print(f"\n{device}: {'method':14s} {'step ms':>9s} {'x MisMatch':>11s}")
        for name, seconds in sorted(medians.items(), key=lambda kv: kv[1]):
            print(f"{'':{len(str(device)) + 2}s}{name:14s} {1000 * seconds:9.1f} {seconds / ref:11.2f}")


if __name__ == "__main__":
    main()
