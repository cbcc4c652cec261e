"""Benchmark: build the report of a synthetic study of 1,000,000 per-image rows on one core.

Generates a schema-conforming study (8 methods x 5 labelled counts x 10 folds x 2,500 test
images, plus trials/ rows and prediction maps for one fold) in a temporary folder, then builds
the report ``--repeats`` times, each in a fresh Python process pinned to one CPU with every
thread pool at 1 (interpreter start and imports included: what ``mismatch report`` costs).
Prints the median wall time and the size of index.html. Targets (issue #7): <= 20 s, <= 15 MB.

    python bench/bench_report.py [--images-per-trial 2500] [--repeats 3] [--merged] [--keep DIR]
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

ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "ARROW_NUM_THREADS")}

CHILD = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[3])})
import pyarrow as pa
pa.set_cpu_count(1); pa.set_io_thread_count(1)
from mismatch.report import build_report
start = time.perf_counter()
build_report(sys.argv[1], sys.argv[2])
print(time.perf_counter() - start)
"""


def generate(root: Path, images_per_trial: int, merged: bool) -> Path:
    """Write the synthetic study (or one merged Parquet file of its per-image rows)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test fixtures' rows: tests/synthetic_study.py
    from tests.synthetic_study import SyntheticGrid, paper_variants, synthetic_images, write_synthetic_study

    grid = SyntheticGrid(paper_variants(), counts=(5, 10, 30, 50, 100), replicates=tuple(range(10)),
                         images_per_trial=images_per_trial, study="bench")
    if merged:
        path = root / "bench.parquet"
        synthetic_images(grid).to_parquet(path, index=False)
        return path
    return write_synthetic_study(root, grid, failed=3, prediction_replicates=(0,))


def run_once(results: Path, out: Path, cpu: int) -> tuple[float, float]:
    """Wall time of one report build in a fresh pinned process, and in-process build time."""
    env = {**os.environ, **ONE_THREAD}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(results), str(out), str(cpu)], env=env,
                          check=True, capture_output=True, text=True)
    return time.perf_counter() - start, float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-trial", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--merged", action="store_true", help="one merged Parquet file instead of a study folder")
    parser.add_argument("--keep", type=Path, default=None, help="write the study and report here and keep them")
    args = parser.parse_args()
    cpu = min(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        results = generate(root, args.images_per_trial, args.merged)
        rows = 8 * 5 * 10 * args.images_per_trial
        print(f"generated {rows:,} per-image rows in {time.perf_counter() - start:.1f} s -> {results}")
        times = [run_once(results, root / "report", cpu) for _ in range(args.repeats)]
        size = (root / "report" / "index.html").stat().st_size / 1e6
    walls, builds = [t[0] for t in times], [t[1] for t in times]
    print(f"one core (cpu {cpu}): median {statistics.median(walls):.2f} s wall including interpreter and imports "
          f"(runs: {', '.join(f'{t:.2f}' for t in walls)}); "
          f"build_report alone median {statistics.median(builds):.2f} s")
    print(f"index.html: {size:.2f} MB")


if __name__ == "__main__":
    main()
