"""Per-image rows -> one row per trial: the unit every table and test of the report starts from.

A trial's value is the mean of the chosen metric over its test images (the paper's per-fold
number); its reliability-bin sums are summed exactly. Trials known only from ``trials/``
(failed, or completed without image rows) are kept with a status so the report can show
what is missing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mismatch import results as schema
from mismatch.report.load import StudyData

METRICS = dict(zip(schema.OVERLAP_METRICS, (
    "foreground IoU",
    "foreground Dice",
    "two-class mean Dice (the authors' \"IoU\")",
), strict=True))
_KEYS = [*schema.VARIANT, "dataset_fingerprint", "study"]


def alpha_key(alpha: pd.Series) -> pd.Series:
    """Alpha as a string usable in group keys: '' for methods without one (NaN)."""
    return alpha.map(lambda a: "" if pd.isna(a) else format(float(a), "g")).astype(str)


def image_subset(data: StudyData, exclude_empty: bool) -> pd.DataFrame:
    """The per-image rows the report uses (images with an empty ground truth dropped if asked)."""
    images = data.images
    if exclude_empty and "fg_pixels" in images:
        images = images[images["fg_pixels"] > 0]
    return images


def _image_summary(images: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per trial: metric mean, image count, mean per-image ECE and summed bins."""
    grouped = images.groupby("trial_id", observed=True, sort=False)
    out = pd.DataFrame({"value": grouped[metric].mean(), "n_images": grouped.size()})
    if "ece" in images:
        out["ece_mean"] = grouped["ece"].mean()
    bins = [c for c in schema.bin_columns() if c in images]
    if bins:
        out = out.join(grouped[bins].sum())
    keys = [c for c in _KEYS if c in images]
    if keys:  # merged files carry identity per image; a study folder's comes from trials/
        out = out.join(images.drop_duplicates("trial_id").set_index("trial_id")[keys])
    out.index = out.index.astype(str)
    return out


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Plain dtypes for the small per-trial table (categoricals would complicate joins)."""
    for col in ("method", "model", "dataset_fingerprint", "study"):
        if col in frame:
            frame[col] = frame[col].astype(object).where(frame[col].notna(), "unknown").astype(str)
    for col in ("labelled_slices", "unlabelled_slices", "fold", "seed"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").fillna(-1).astype(np.int64)
    frame["alpha"] = pd.to_numeric(frame["alpha"], errors="coerce").astype(float)
    frame["alpha_key"] = alpha_key(frame["alpha"])
    # Object columns: row selections on this small table are then plain NumPy takes, many
    # times faster than Arrow-backed strings (hundreds of selections per report).
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            frame[col] = frame[col].astype(object)
    return frame


def per_trial(data: StudyData, metric: str, exclude_empty: bool = False) -> pd.DataFrame:
    """One row per trial (index ``trial_id``): identity, ``value``, ``n_images``, bins, status.

    ``status`` is ``completed`` (has image rows), ``failed`` (trials row says so) or
    ``no-images`` (completed per trials/ but no image rows were found).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    images = image_subset(data, exclude_empty)
    if metric not in images:
        raise ValueError(f"the per-image rows have no {metric!r} column")
    summary = _image_summary(images, metric)
    if data.trials is None:
        summary["status"] = "completed"
        return _normalise(summary.reset_index(names="trial_id").set_index("trial_id"))
    trials = data.trials.drop_duplicates("trial_id", keep="last").copy()
    trials["trial_id"] = trials["trial_id"].astype(str)
    trials = trials.set_index("trial_id")
    extra = [c for c in trials.columns if c not in schema.IDENTITY or c not in summary]
    merged = summary.join(trials[extra], how="outer")
    for col in _KEYS:  # trials/ is authoritative for identity where both exist
        if col in trials and col in merged:
            merged[col] = trials[col].reindex(merged.index).astype(object).where(
                trials[col].reindex(merged.index).notna(), merged[col].astype(object))
    status = merged["status"].astype(object) if "status" in merged else pd.Series("completed", merged.index)
    has_images = merged["n_images"].fillna(0) > 0
    status = status.where(status.notna(), "completed")
    # A pruned search run has no image rows by design: kept as "pruned", out of every table
    merged["status"] = np.where(has_images & (status != "pruned"), "completed",
                                np.where(status.isin(["failed", "pruned"]), status, "no-images"))
    merged["n_images"] = merged["n_images"].fillna(0).astype(np.int64)
    return _normalise(merged)
