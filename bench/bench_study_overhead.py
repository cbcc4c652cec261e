"""Study overhead: what Ray Tune and the runner add on top of the trials themselves.

overhead = wall time of `mismatch study run` for N trials
           / (sum of the trials' own run times / concurrent slots)

A trial's own run time is its row's finished_at - started_at (data loading, training,
testing). Slots = CPUs / CPUs per trial. The target is <= 1.25 for trials of 30 s or more on
2 cores. Ray's start-up is included in the wall time, as a user experiences it.

Run: python bench/bench_study_overhead.py [--trials 4] [--epochs 3] [--size 64] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml


def study(args: argparse.Namespace) -> dict:
    """N MisMatch trials (one per fold) on a 64x64 vessel phantom."""
    return {
        "name": "overhead",
        "base": {
            "data": {"synthetic": {"kind": "vessels", "cases": max(10, args.trials), "size": [args.size, args.size],
                                   "slices": 24}},
            "protocol": {"unlabelled_cases": 3, "validation_cases": 1, "test_cases": 5},
            "train": {"epochs": args.epochs, "snapshot_k": 1, "lr": 0.001},
        },
        "methods": [{"name": "mismatch"}],
        "grid": {"labelled_slices": [10], "fold": list(range(args.trials))},
        "resources": {"cpu": 1},
    }


def one_run(args: argparse.Namespace, tmp: str, index: int) -> tuple[float, float, float, float]:
    """(wall, sum of trial times, slots, overhead) of one study run."""
    path = Path(tmp) / f"overhead-{index}.yaml"
    path.write_text(yaml.safe_dump(study(args)))
    storage = os.path.join(tmp, f"runs-{index}")
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "mismatch", "study", "run", str(path), "--storage", storage]
    if args.tracking:
        cmd += ["--tracking", args.tracking]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    trials = pd.read_parquet(os.path.join(storage, "overhead", "trials"))
    own = (pd.to_datetime(trials["finished_at"]) - pd.to_datetime(trials["started_at"])).dt.total_seconds()
    slots = max(1, (os.cpu_count() or 1) // 1)
    return wall, float(own.sum()), slots, wall / (own.sum() / min(slots, len(trials)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--tracking", default=None, help="override the study's tracker (default: mlflow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MISMATCH_CACHE"] = os.path.join(tmp, "cache")
        from mismatch.config import SynthSpec
        from mismatch.data import synthetic_dataset

        synthetic_dataset(SynthSpec(kind="vessels", cases=max(10, args.trials), size=(args.size, args.size), slices=24))
        results = [one_run(args, tmp, i) for i in range(args.runs)]
    print(f"{args.trials} MisMatch trials, {args.epochs} epochs, {args.size}x{args.size}, 1 CPU per trial, "
          f"{os.cpu_count()} CPUs, embedded local Ray; {args.runs} run(s)")
    print(f"{'wall s':>8s} {'sum trial s':>12s} {'mean trial s':>13s} {'slots':>6s} {'overhead':>9s}")
    for wall, own, slots, overhead in results:
        print(f"{wall:8.1f} {own:12.1f} {own / args.trials:13.1f} {slots:6d} {overhead:9.3f}")
    print(f"median overhead: {statistics.median(r[3] for r in results):.3f}")


if __name__ == "__main__":
    main()
