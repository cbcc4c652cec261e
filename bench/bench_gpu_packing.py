"""Fractional-GPU packing: throughput of K MisMatch trials sharing one GPU.

A study's ``resources: {gpu: 0.25}`` lets Ray start four trials on one GPU. This benchmark
runs K = 1, 2, 4 (and more with --k) identical trials at once as separate processes on the
same GPU, exactly what Ray does, and prints wall time, trials per hour and the speed-up over
one trial at a time, with each trial's peak GPU memory (from its Parquet row).

Run on a CUDA machine: python bench/bench_gpu_packing.py [--epochs 2] [--size 176] [--k 1 2 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd


def trial_command(out: str, seed: int, args: argparse.Namespace) -> list[str]:
    """One `mismatch train` of MisMatch on a cached vessel phantom, on the GPU."""
    return [
        sys.executable, "-m", "mismatch", "train", "--synthetic", "vessels", "--epochs", str(args.epochs),
        "--labelled-slices", "10", "--seed", str(seed), "--device", "cuda", "--out", out, "--quiet",
        "--set", f"data.synthetic.size=[{args.size},{args.size}]", "--set", f"data.synthetic.slices={args.slices}",
        "--set", "train.snapshot_k=1",
    ]


def run_batch(k: int, out: str, args: argparse.Namespace) -> float:
    """Wall seconds for k trials started together."""
    start = time.perf_counter()
    procs = [subprocess.Popen(trial_command(out, 100 * k + i, args), stdout=subprocess.DEVNULL) for i in range(k)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a trial failed (exit codes {codes})")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=176)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MISMATCH_CACHE", os.path.join(tmp, "cache"))
        run_batch(1, os.path.join(tmp, "warmup"), args)  # generates and caches the phantom
        rows = []
        for k in args.k:
            wall = run_batch(k, os.path.join(tmp, f"k{k}"), args)
            trials = pd.read_parquet(os.path.join(tmp, f"k{k}", "adhoc", "trials"))
            rows.append((k, wall, 3600 * k / wall, trials["peak_memory_mb"].max(), trials["train_time_s"].median()))
    base = rows[0][2]
    print(f"MisMatch (mm, width 24), {args.size}x{args.size}, {args.epochs} epochs per trial, batch 1")
    print(f"{'trials at once':>14s} {'wall s':>8s} {'trials/h':>9s} {'speed-up':>9s} {'peak MB/trial':>14s} {'train s (median)':>17s}")
    for k, wall, per_hour, mem, train in rows:
        print(f"{k:14d} {wall:8.1f} {per_hour:9.1f} {per_hour / base:8.2f}x {mem:14.0f} {train:17.1f}")


if __name__ == "__main__":
    main()
