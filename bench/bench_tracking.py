"""Tracking overhead per trial: a smoke trial through the study worker (``trial_fn``) with
``tracking: none`` and with the default MLflow store, alternated, median of a few runs each.

overhead = median(mlflow) - median(none), in seconds and as a fraction of median(none).

Each trial runs in a fresh process, as a Ray Tune trial runs in a fresh actor, so MLflow's
import counts in every trial; torch and the data cache are loaded before the clock starts.
The store's one-off set-up (creating the SQLite tables, done once per study by the driver) is
timed apart and left out of the per-trial figure. Ray Tune's ``report`` is replaced by a
no-op: the worker's code is what is measured, not Ray.

Run: python bench/bench_tracking.py [--runs 3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import types

from mismatch.config import load_trial_spec
from mismatch.study import worker
from mismatch.study.trials import trial_payload
from mismatch.tracking import TrackingSpec, prepare_tracking


def smoke_spec(epochs: int, seed: int) -> dict:
    """The quickstart's smoke trial shape: a 32x32 vessel phantom, MisMatch, CPU."""
    return {"study": "bench", "data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10}},
            "protocol": {"fold": 0, "unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2, "labelled_slices": 2},
            "method": {"name": "mismatch", "width": 4},
            "train": {"epochs": epochs, "snapshot_k": 1, "device": "cpu", "seed": seed}}


def fake_tune() -> None:
    """Stand in for ``ray.tune`` and the Ray node lookup (no Ray session here)."""
    import ray  # noqa: F401 - the real package must exist; only its tune module is replaced

    sys.modules["ray.tune"] = types.SimpleNamespace(report=lambda metrics: None)
    sys.modules["ray"].tune = sys.modules["ray.tune"]
    worker.placement = lambda: {"ray_node_id": "bench", "node_ip": "127.0.0.1"}


def one_trial(storage: str, tracking: TrackingSpec, epochs: int, seed: int) -> float:
    spec = load_trial_spec(smoke_spec(epochs, seed))
    start = time.perf_counter()
    worker.trial_fn({"trial": {"id": spec.trial_id(), "spec": trial_payload(spec)}}, storage=storage, threads=1,
                    tracking=tracking)
    return time.perf_counter() - start


def in_fresh_process(storage: str, kind: str, epochs: int, seed: int) -> float:
    """One trial's seconds, timed inside a new interpreter (``--one``)."""
    out = subprocess.run([sys.executable, __file__, "--one", kind, storage, str(epochs), str(seed)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


IMPORT_PROBE = ("import time, torch, pandas; t = time.perf_counter(); from mlflow import MlflowClient; "
                "print(time.perf_counter() - t)")


def import_seconds() -> float:
    """Seconds to import MLflow's client in a fresh process that has torch and pandas loaded."""
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        kind, storage, epochs, seed = sys.argv[2:6]
        fake_tune()
        print(one_trial(storage, TrackingSpec(kind=kind), int(epochs), int(seed)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"none": [], "mlflow": []}
    with tempfile.TemporaryDirectory() as root:
        in_fresh_process(f"{root}/warm", "none", args.epochs, 99)  # the phantom cache
        start = time.perf_counter()
        prepare_tracking(TrackingSpec(), f"{root}/mlflow", "bench")
        setup = time.perf_counter() - start
        for run in range(args.runs):  # alternated, so machine load falls on both alike
            for kind in ("none", "mlflow"):
                times[kind].append(in_fresh_process(f"{root}/{kind}", kind, args.epochs, run))
    imports = statistics.median(import_seconds() for _ in range(args.runs))
    base, tracked = statistics.median(times["none"]), statistics.median(times["mlflow"])
    print(f"smoke trial ({args.epochs} epochs), median of {args.runs}: none {base:.2f} s, mlflow {tracked:.2f} s")
    print(f"tracking overhead per trial: {tracked - base:+.2f} s ({(tracked - base) / base:+.1%}); "
          f"one-off store set-up per study (driver): {setup:.2f} s")
    print(f"of which importing mlflow in the trial's process: {imports:.2f} s")
    print("runs:", {k: [round(t, 2) for t in v] for k, v in times.items()})


if __name__ == "__main__":
    main()
