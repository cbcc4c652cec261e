"""Synthetic, schema-conforming study results for the tests and bench/bench_report.py (test data, kept out of the library).

Rows follow docs/results-schema.md exactly (identity columns, per-image pixel counts, metrics
recomputed from those counts, reliability-bin sums), so the report can be developed and
benchmarked without training anything. Values are random but deterministic given ``seed``;
each method has a made-up skill that grows with the labelled count.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mismatch.results import COMPLETED, FAILED, N_BINS, SCHEMA_VERSION, bin_centres, bin_column

PIXELS = 176 * 176
SKILL = {"sup1": 0.48, "sup2": 0.51, "mta": 0.53, "mean-teacher": 0.55, "fixmatch": 0.50,
         "cct": 0.53, "morph": 0.53, "mismatch": 0.60}
PARAMS = {"unet": 1_879_777, "mm": 2_681_132, "mm-a": 2_440_442, "mm-b": 2_561_702, "mm-c": 2_559_872}


@dataclass(frozen=True)
class SyntheticGrid:
    """A grid of trials: every variant (method, model, alpha) x count x replicate.

    ``variants`` are (method, model, alpha) triples, alpha NaN for methods without one.
    ``axis`` is the column that takes the values in ``counts`` (``labelled_slices`` for a
    CARVE-like study, ``unlabelled_slices`` for a BRATS-like one); ``replicate`` is ``fold``
    or ``seed``.
    """

    variants: tuple[tuple[str, str, float], ...]
    counts: tuple[int, ...] = (5, 10)
    replicates: tuple[int, ...] = (0, 1, 2)
    images_per_trial: int = 8
    axis: str = "labelled_slices"
    replicate: str = "fold"
    study: str = "synthetic"
    seed: int = 0
    extra: tuple[tuple[str, str, float, int], ...] = field(default=())  # (method, model, alpha, count)


def paper_variants() -> tuple[tuple[str, str, float], ...]:
    """The eight methods of the paper's Table I with their networks (alpha only for MisMatch)."""
    nan = float("nan")
    return (("sup1", "unet", nan), ("sup2", "mm", nan), ("mta", "unet", nan),
            ("mean-teacher", "unet", nan), ("fixmatch", "unet", nan), ("cct", "unet", nan),
            ("morph", "unet", nan), ("mismatch", "mm", 0.002))


def _trial_id(row: tuple, seed: int) -> str:
    """A content-derived id like the real ones: file-name safe even for odd method names."""
    digest = hashlib.sha256(repr((*map(str, row), seed)).encode()).hexdigest()[:12]
    return f"{re.sub(r'[^a-z0-9-]+', '', str(row[0]).lower()) or 'trial'}-{digest}"


def trial_grid(grid: SyntheticGrid) -> pd.DataFrame:
    """One row of identity columns per trial of ``grid`` (ablation ``extra`` rows included)."""
    rows = [(m, mo, a, c, r) for (m, mo, a) in grid.variants for c in grid.counts for r in grid.replicates]
    rows += [(m, mo, a, c, r) for (m, mo, a, c) in grid.extra for r in grid.replicates]
    frame = pd.DataFrame(rows, columns=["method", "model", "alpha", grid.axis, grid.replicate])
    other = "unlabelled_slices" if grid.axis == "labelled_slices" else "labelled_slices"
    frame[other] = 20 if other == "labelled_slices" else 1200
    frame["fold" if grid.replicate == "seed" else "seed"] = 0
    frame["label_draw"] = 0
    frame["schema_version"] = np.int32(SCHEMA_VERSION)
    frame["study"] = grid.study
    frame["dataset_fingerprint"] = "synthetic-0123456789ab"
    frame["trial_id"] = [_trial_id(row, grid.seed) for row in rows]
    return frame


def _image_metrics(iou_target: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Pixel counts reaching ``iou_target`` and the metrics recomputed from them."""
    n = len(iou_target)
    fg = rng.integers(200, 3000, n)
    tp = np.round(fg * np.sqrt(iou_target)).astype(np.int64)
    fn = fg - tp
    fp = np.maximum(np.round(tp / iou_target - fg).astype(np.int64), 0)
    tn = PIXELS - tp - fp - fn
    iou = tp / (tp + fp + fn)
    dice = 2 * tp / (2 * tp + fp + fn)
    dice_bg = 2 * tn / (2 * tn + fp + fn)
    return {"fg_pixels": fg, "tp": tp, "fp": fp, "fn": fn, "tn": tn, "iou": iou, "dice": dice,
            "mean_dice_2class": (dice + dice_bg) / 2}


def _bin_columns(iou: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Reliability-bin sums whose miscalibration grows as IoU falls; ECE from the same sums."""
    n = len(iou)
    share = rng.dirichlet([1, 1, 1, 2, 40], n)  # most pixels are confident background
    count = np.round(share * PIXELS).astype(np.int64)
    count[:, -1] += PIXELS - count.sum(axis=1)
    centre = bin_centres()
    conf_sum = count * centre
    gap = np.clip((1 - iou)[:, None] * rng.uniform(0.05, 0.4, (n, N_BINS)), 0, 0.5)
    correct = np.minimum(np.round(count * (centre - gap)).astype(np.int64), count)
    out: dict[str, np.ndarray] = {}
    for k in range(N_BINS):
        out[bin_column(k, "count")] = count[:, k]
        out[bin_column(k, "conf_sum")] = conf_sum[:, k]
        out[bin_column(k, "correct_sum")] = correct[:, k]
    out["ece"] = np.abs(correct - conf_sum).sum(axis=1) / PIXELS  # ece_from_bins, row-wise
    out["brier"] = out["ece"] * 0.5
    return out


def synthetic_images(grid: SyntheticGrid, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-image rows for every trial of ``grid`` (vectorised: a million rows in seconds)."""
    trials = trial_grid(grid) if trials is None else trials
    rng = np.random.default_rng(grid.seed)
    k = grid.images_per_trial
    skill = trials["method"].map(SKILL).fillna(0.5).to_numpy()
    count = trials[grid.axis].to_numpy(dtype=float)
    level = skill + 0.05 * np.log(np.maximum(count, 1)) / np.log(100)
    level = level + rng.normal(0, 0.02, len(trials))  # fold-to-fold variation
    iou = np.clip(np.repeat(level, k) + rng.normal(0, 0.08, len(trials) * k), 0.05, 0.97)
    frame = trials.loc[trials.index.repeat(k)].reset_index(drop=True)
    frame["case_id"] = [f"case{i % 5}" for i in range(len(frame))]
    frame["slice_index"] = np.tile(np.arange(k, dtype=np.int64), len(trials))
    frame["patch"] = "full"
    for name, values in {**_image_metrics(iou, rng), **_bin_columns(iou, rng)}.items():
        frame[name] = values
    return frame


def synthetic_trial_rows(trials: pd.DataFrame, images: pd.DataFrame, failed: set[str]) -> pd.DataFrame:
    """Per-trial rows (trials/ table) for ``trials``; ids in ``failed`` are marked failed."""
    out = trials.copy()
    n_images = images.groupby("trial_id").size()
    is_failed = out["trial_id"].isin(failed)
    out["status"] = np.where(is_failed, FAILED, COMPLETED)
    out["error"] = np.where(is_failed, "RuntimeError: CUDA out of memory (synthetic)", None)
    out["spec_json"] = [json.dumps({"method": {"name": m}}) for m in out["method"]]
    out["params"] = out["model"].map(PARAMS).fillna(1_000_000).astype(np.int64)
    out["train_time_s"] = 3600.0
    out["infer_time_per_image_s"] = np.where(out["model"] == "unet", 4.2e-3, 1.8e-2)
    out["peak_memory_mb"] = 2048.0
    out["epochs"] = np.int64(50)
    out["final_loss"] = 0.1
    out["final_losses_json"] = '{"loss": 0.1}'
    out["best_val_iou"] = out["final_val_iou"] = 0.6
    out["n_test_images"] = out["trial_id"].map(n_images).fillna(0).astype(np.int64)
    out["device"] = "cuda (synthetic)"
    out["code_version"] = "0.1.0+synthetic"
    out["torch_version"] = "2.x"
    out["started_at"] = "2024-01-01T00:00:00+00:00"
    out["finished_at"] = "2024-01-01T01:00:00+00:00"
    return out


def synthetic_predictions(n: int = 3, size: int = 32, seed: int = 0, skill: float = 0.6) -> dict[str, np.ndarray]:
    """A predictions/<trial_id>.npz payload: the same slices for every seed; noise from ``skill``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    label = np.stack([((yy - size / 2 - i) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2) for i in range(n)])
    image = label * 1.5 + np.random.default_rng(123).normal(0, 0.5, label.shape)
    prob = np.clip(label * skill + rng.normal(0.2, 0.2, label.shape), 0, 1)
    return {"case_ids": np.array([f"case{i}" for i in range(n)]),
            "slice_index": np.arange(n, dtype=np.int64), "patch": np.array(["full"] * n),
            "image": image.astype(np.float16), "label": label.astype(np.uint8),
            "prob": np.round(prob * 255).astype(np.uint8)}


def write_synthetic_study(root: str | Path, grid: SyntheticGrid, failed: int = 0,
                          predictions: bool = True, prediction_replicates: tuple[int, ...] | None = None) -> Path:
    """Write ``grid`` as a study folder (trials/, images/, predictions/); returns the folder.

    The last ``failed`` trials are written as failed (a trials row with an error, no images).
    Prediction maps are written for the replicates in ``prediction_replicates`` (all if None).
    """
    base = Path(root) / grid.study
    trials = trial_grid(grid)
    images = synthetic_images(grid, trials)
    failed_ids = set(trials["trial_id"].iloc[len(trials) - failed:]) if failed else set()
    rows = synthetic_trial_rows(trials, images, failed_ids)
    for sub in ("trials", "images", "predictions"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for trial_id, part in images.groupby("trial_id", sort=False):
        if trial_id not in failed_ids:
            part.to_parquet(base / "images" / f"{trial_id}.parquet", index=False)
    for i, row in rows.iterrows():
        one = row.to_frame().T.astype(rows.dtypes.to_dict())
        one.to_parquet(base / "trials" / f"{row['trial_id']}.parquet", index=False)
        wanted = prediction_replicates is None or row[grid.replicate] in prediction_replicates
        if predictions and wanted and row["trial_id"] not in failed_ids:
            buf = io.BytesIO()
            np.savez_compressed(buf, **synthetic_predictions(seed=i, skill=SKILL.get(row["method"], 0.5)))
            (base / "predictions" / f"{row['trial_id']}.npz").write_bytes(buf.getvalue())
    return base
