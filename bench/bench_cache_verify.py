"""What checking a prepared cache's checksums costs a trial (issue 12, item 12).

Run: python bench/bench_cache_verify.py [--out /tmp/mismatch-bench-verify] [--runs 3] [--mb 256] [--keep]

Writes the quickstart's smoke phantom (6 cases, 32x32, 10 slices) and the quickstart's own
(10 cases, 64x64, 24 slices) in the msd layout, prepares each, and for each:

* times ``load_trial_data`` from the cache with the check on and off (median of ``--runs``);
* times one whole trial from the cache, as the study profile runs it (CPU, check on);
* prints the check's cost (the two loads' difference) as a share of the trial.

Then hashes a ``--mb`` MB file to give sha256's throughput here, and what the check would cost
on a CARVE-sized trial (``bench/bench_data.py``'s dataset: 10 cases of 450 slices, crop: corners, so
18000 float32 samples of 1 x 176 x 176, 2.8 GB, all read by a fold), for scaling to other datasets.
Figures are wall seconds with a warm page cache (the files were just written).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np

from mismatch.config import DataSpec, load_trial_spec
from mismatch.data import load_trial_data, open_prepared, prepare_dataset, trial_data, write_synthetic_dataset
from mismatch.data.presets import data_spec_for
from mismatch.data.recipe import file_sha256

PHANTOMS = {  # name: (cases, (h, w), slices, protocol, train, method)
    "smoke": (6, (32, 32), 10, {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2, "labelled_slices": 2},
              {"epochs": 1, "snapshot_k": 1, "prediction_maps": 2}, {"name": "mismatch", "model": "mm", "width": 8}),
    "quickstart": (10, (64, 64), 24, {"unlabelled_cases": 3, "validation_cases": 1, "test_cases": 5,
                                      "labelled_slices": 5},
                   {"epochs": 3, "lr": 0.001, "snapshot_k": 2, "prediction_maps": 4, "stream": "two-stream"},
                   {"name": "mismatch", "model": "mm"}),
}


def _median_seconds(fn, runs: int) -> float:  # noqa: ANN001 - any callable
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _load(spec: DataSpec, protocol, verify: bool) -> None:  # noqa: ANN001 - a ProtocolSpec
    original = trial_data.open_prepared
    trial_data.open_prepared = partial(open_prepared, verify=verify)
    try:
        load_trial_data(spec, protocol)
    finally:
        trial_data.open_prepared = original


def bench_phantom(name: str, out: Path, runs: int) -> dict[str, float]:
    """Load times with and without the check, and one trial's time, for one phantom."""
    from mismatch.trial.run import run_trial

    cases, size, slices, protocol, train, method = PHANTOMS[name]
    raw = write_synthetic_dataset(out / name / "raw", "vessels", cases, size, slices, seed=0)
    prepared = out / name / "prepared"
    prepare_dataset(data_spec_for("msd", raw, "msd", {}), prepared)
    spec = load_trial_spec({"study": "bench", "data": {"prepared": str(prepared), "preset": "msd"},
                            "protocol": {"fold": 0, **protocol}, "method": method,
                            "train": {**train, "device": "cpu"}})
    size_mb = sum(p.stat().st_size for p in (prepared / "cases").rglob("*.npy")) / 1e6
    _load(spec.data, spec.protocol, True)  # warm the page cache and imports
    on = _median_seconds(lambda: _load(spec.data, spec.protocol, True), runs)
    off = _median_seconds(lambda: _load(spec.data, spec.protocol, False), runs)
    start = time.perf_counter()
    run_trial(spec)
    trial = time.perf_counter() - start
    return {"cache_mb": size_mb, "load_on": on, "load_off": off, "trial": trial}


def sha256_throughput(out: Path, mb: int) -> float:
    """MB/s of :func:`file_sha256` on a freshly written file of ``mb`` MB."""
    path = out / "hash.bin"
    path.write_bytes(np.random.default_rng(0).bytes(mb * 1_000_000))
    file_sha256(path)  # warm
    seconds = _median_seconds(lambda: file_sha256(path), 3)
    return mb / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/mismatch-bench-verify"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--phantoms", nargs="+", default=list(PHANTOMS), choices=list(PHANTOMS))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    try:
        print(f"{'phantom':<11} {'cache MB':>9} {'load, check on':>15} {'load, check off':>16} {'check':>8} "
              f"{'trial':>8} {'check / trial':>14}")
        for name in args.phantoms:
            r = bench_phantom(name, args.out, args.runs)
            cost = r["load_on"] - r["load_off"]
            print(f"{name:<11} {r['cache_mb']:>9.2f} {r['load_on']:>14.3f}s {r['load_off']:>15.3f}s "
                  f"{cost:>7.3f}s {r['trial']:>7.1f}s {100 * cost / r['trial']:>13.3f}%")
        rate = sha256_throughput(args.out, args.mb)
        carve_mb = 10 * 450 * 4 * 176 * 176 * 4 / 1e6  # bench_data.py's CARVE-sized cache: 10 cases, 18000 samples
        print(f"sha256: {rate:.0f} MB/s here; a CARVE-sized trial reads about {carve_mb / 1e3:.1f} GB of cache: "
              f"{carve_mb / rate:.1f} s of hashing against hours of training")
    finally:
        if not args.keep:
            shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
