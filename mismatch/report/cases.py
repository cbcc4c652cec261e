"""Per-test-case values: the unit the report's intervals, paired tests and rank figure resample.

A test case (a volume) is the independent unit of a segmentation study; its slices and patches
are not. The values come from the ``cases`` table when the study has one (per-case rows written
by each trial, computed on the reassembled volume), else from the ``images`` table: a case's
pixel counts (tp, fp, fn, tn) are summed over its images within a trial and its Dice / IoU
recomputed from the sums, with the schema's empty-foreground convention (0 / 0 is a perfect
score). Rows written without pixel counts fall back to the mean of the per-image metric, and
so do multi-class studies (a classes/ table), whose per-image counts are summed over classes
while their metrics are means over foreground classes.

Every frame here has the columns of :data:`UNIT_COLUMNS` (plus ``value``, the report's metric)
so that either source feeds the same statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mismatch.report.design import Column, Design
from mismatch.report.load import StudyData

CASE_TABLE_METRICS = ("dice", "iou")
"""Overlap metrics the ``cases`` table carries (besides surface distances)."""
IDENTITY = ("trial_id", "fold", "seed", "label_draw")
RUN_KEYS = ("fold", "seed", "label_draw")
"""What identifies one training run: runs of two methods with the same key share a data split."""
UNIT_COLUMNS = ("trial_id", "fold", "seed", "label_draw", "case_id", "value")

SOURCE_CASES = "cases table (per-case rows on the reassembled volume)"
SOURCE_COUNTS = "images table (tp/fp/fn/tn summed over each case's images within a trial)"
SOURCE_MEANS = "images table (mean of the per-image metric over each case's images; no pixel counts stored)"
SOURCE_CLASS_MEANS = ("images table (mean of the per-image metric, itself a mean over foreground classes, over "
                      "each case's images)")


@dataclass(frozen=True)
class CaseValues:
    """Per (trial, test case) values of the report's metric, and where they came from."""

    frame: pd.DataFrame
    source: str


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    return (num / den.where(den > 0)).fillna(1.0)  # 0 / 0 is a perfect score (empty foreground)


def from_counts(images: pd.DataFrame, metric: str) -> pd.Series:
    """Per (trial_id, case_id) metric from the pixel counts summed over the case's images."""
    sums = images.groupby(["trial_id", "case_id"], observed=True)[["tp", "fp", "fn", "tn"]].sum()
    tp, fp, fn, tn = (sums[c].astype(float) for c in ("tp", "fp", "fn", "tn"))
    if metric == "iou":
        return _ratio(tp, tp + fp + fn)
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    if metric == "dice":
        return dice
    return (dice + _ratio(2 * tn, 2 * tn + fp + fn)) / 2


def _from_images(images: pd.DataFrame, metric: str, multiclass: bool = False) -> tuple[pd.Series, str]:
    if "case_id" not in images:
        return pd.Series(dtype=float), ""
    if {"tp", "fp", "fn", "tn"} <= set(images.columns) and not multiclass:
        return from_counts(images, metric), SOURCE_COUNTS
    means = images.groupby(["trial_id", "case_id"], observed=True)[metric].mean()
    return means, SOURCE_CLASS_MEANS if multiclass else SOURCE_MEANS


def case_values(data: StudyData, images: pd.DataFrame, trials: pd.DataFrame, metric: str,
                use_cases_table: bool = True) -> CaseValues | None:
    """Per-case values of ``metric`` for the completed trials of ``trials``, or None without case ids.

    The ``cases`` table is preferred when present and it carries ``metric`` (not the two-class
    mean Dice); ``use_cases_table=False`` (e.g. with ``--exclude-empty``) forces the images.
    """
    rows = data.case_rows() if use_cases_table and metric in CASE_TABLE_METRICS else None
    if rows is not None and metric in rows:
        values, source = rows.groupby(["trial_id", "case_id"], observed=True)[metric].mean(), SOURCE_CASES
    else:
        values, source = _from_images(images, metric, data.has_class_rows())
    if not source or values.empty:
        return None
    frame = values.rename("value").reset_index()
    frame["trial_id"] = frame["trial_id"].astype(str)
    frame["case_id"] = frame["case_id"].astype(str)
    done = trials[trials["status"] == "completed"]
    ident = done[[c for c in IDENTITY[1:] if c in done]].copy()
    if "label_draw" not in ident:  # studies written before the label_draw axis used draw 0
        ident["label_draw"] = 0
    frame = frame.join(ident, on="trial_id", how="inner")
    return CaseValues(frame[list(UNIT_COLUMNS)].reset_index(drop=True), source)


def units(cases: pd.DataFrame, trials: pd.DataFrame, design: Design, column: Column,
          value: int | None) -> pd.DataFrame:
    """One row per (training run, test case) of ``column`` at ``value``.

    Columns: :data:`RUN_KEYS` (``fold``, ``seed``, ``label_draw``: one trained model), ``case_id``
    and ``value``. Seeds and label draws are kept apart: each is a training run, the top level of
    the report's two-level statistics (a case is counted once per run, never as more cases).
    Trials of one column that share a run key (none in a study's grid) are averaged.
    """
    ids = design.column_trials(trials, column, value).index
    sel = cases[cases["trial_id"].isin(ids)]
    out = sel.groupby([*RUN_KEYS, "case_id"], sort=True)["value"].mean()
    return out[np.isfinite(out)].reset_index()
