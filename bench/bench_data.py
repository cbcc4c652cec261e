"""How long a CARVE-sized trial takes to get its data: from raw MetaImage files vs a prepared cache.

Run: python bench/bench_data.py [--out /tmp/mismatch-bench-data] [--cases 10] [--slices 450]
                                [--size 300 450] [--runs 3] [--dtype float32] [--keep]

Writes a synthetic dataset in the carve14 layout (int16 HU noise and straight tubes
labelled 1 / 2, cheap to generate, not the phantom), prepares it with the ``carve`` preset,
re-runs prepare (a no-op), then times ``load_trial_data`` for fold 0 of the paper's
protocol (1 labelled case x 5 slices, 3 unlabelled, 1 validation, 5 test cases) from the
raw files and from the cache. Figures are wall seconds with a warm page cache (the files
were just written or read); loads from the cache are the median of ``--runs``.
Needs SimpleITK and about 2 GB of disk per 5 cases at the default size.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from mismatch.config import DataSpec, ProtocolSpec
from mismatch.data import carve14, load_trial_data, prepare_dataset
from mismatch.data.presets import data_spec_for


def carve_like_case(rng: np.random.Generator, slices: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """HU (S, H, W) int16: lung-like noise with 40 straight vessels crossing the slab; labels 1 / 2."""
    h, w = size
    image = rng.integers(-880, -820, (slices, h, w), dtype=np.int16)  # parenchyma with noise
    label = np.zeros((slices, h, w), np.uint8)
    z = np.arange(slices)
    for k in range(40):
        y0, x0 = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        dy, dx = rng.uniform(-0.1, 0.1, size=2)
        radius = rng.uniform(2.0, 4.0)
        cy, cx = y0 + dy * (z - slices / 2), x0 + dx * (z - slices / 2)  # centre on each slice
        r = int(np.ceil(radius))
        oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
        for s in range(slices):
            iy, ix = int(round(cy[s])), int(round(cx[s]))
            if r <= iy < h - r and r <= ix < w - r:
                disc = (oy + iy - cy[s]) ** 2 + (ox + ix - cx[s]) ** 2 <= radius**2
                window = (s, slice(iy - r, iy + r + 1), slice(ix - r, ix + r + 1))
                label[window][disc] = 1 + k % 2  # artery / vein
                image[window][disc] = 40
    return image, label


def write_dataset(root: Path, cases: int, slices: int, size: tuple[int, int]) -> float:
    """Write ``cases`` cases in the carve14 layout; returns seconds."""
    start = time.perf_counter()
    for i in range(cases):
        rng = np.random.default_rng([0, i])
        carve14.write_case(root, f"case_{i:02d}", *carve_like_case(rng, slices, size), spacing=(0.7, 0.7, 0.7))
    return time.perf_counter() - start


def timed(fn, runs: int) -> tuple[float, object]:
    """Median seconds of ``runs`` calls, and the last result."""
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/mismatch-bench-data"))
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--slices", type=int, default=450)
    parser.add_argument("--size", type=int, nargs=2, default=[300, 450], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--raw-runs", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--keep", action="store_true", help="keep the written data")
    args = parser.parse_args()

    raw, prepared = args.out / "raw", args.out / "prepared"
    if args.out.exists():
        shutil.rmtree(args.out)
    print(f"{args.cases} cases of {args.slices} x {args.size[0]} x {args.size[1]} (S x H x W), carve preset")
    print(f"write raw (.mhd/.raw):   {write_dataset(raw, args.cases, args.slices, tuple(args.size)):7.1f} s, "
          f"{folder_bytes(raw) / 1e9:.2f} GB")
    spec = data_spec_for("carve14", raw, "carve")
    result = prepare_dataset(spec, prepared, dtype=args.dtype)
    print(f"prepare (check + write): {result.seconds:7.1f} s, {result.samples} samples, "
          f"{folder_bytes(prepared) / 1e9:.2f} GB ({args.dtype})")
    again = prepare_dataset(spec, prepared, dtype=args.dtype)
    print(f"prepare again (no-op):   {again.seconds:7.2f} s (up to date: {again.up_to_date})")

    protocol = ProtocolSpec(preset="carve-10fold", labelled_slices=5)
    cached = DataSpec(**result.study_data)
    t_cache, data = timed(lambda: load_trial_data(cached, protocol), args.runs)
    t_raw, from_raw = timed(lambda: load_trial_data(spec, protocol), args.raw_runs)
    sizes = ", ".join(f"{r} {len(getattr(data, r))}" for r in ("labelled", "unlabelled", "validation", "test"))
    gb = sum(getattr(data, r).images.nbytes for r in ("labelled", "unlabelled", "validation", "test")) / 1e9
    print(f"trial data: {sizes} samples of {data.test.images.shape[1:]}, {gb:.2f} GB in memory")
    print(f"load_trial_data from raw:   {t_raw:7.2f} s (median of {args.raw_runs})")
    print(f"load_trial_data from cache: {t_cache:7.2f} s (median of {args.runs})  -> {t_raw / t_cache:.1f}x faster")
    same = all(np.array_equal(getattr(data, r).images, getattr(from_raw, r).images)
               for r in ("labelled", "unlabelled", "validation", "test"))
    print(f"cache and raw give identical samples: {same}")
    if not args.keep:
        shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
