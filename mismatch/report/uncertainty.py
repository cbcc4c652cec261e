"""Uncertainty of the report's numbers: bootstrap intervals, reachable p-values, verdicts.

- Intervals: a stratified percentile bootstrap (``scipy.stats.bootstrap``) that resamples test
  cases within each fold (each fold is a separate sample of the multi-sample bootstrap), with
  the statistic "mean over folds of the mean over the fold's cases"; seeded, so a report is
  reproducible.
- Reachable p-values: the test itself applied to the most extreme data its design allows, so
  the note under a test table is computed, not remembered (2 vs 2 folds: 1/3).
- Verdicts: "better" or "worse" only when the Holm-adjusted paired test and the interval of the
  difference agree; otherwise "no difference detectable at this n".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from mismatch.report.stats import mann_whitney, wilcoxon_paired

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
SIGNIFICANCE = 0.05
BETTER, SAME, WORSE = "better", "no difference detectable at this n", "worse"
DEGENERATE_IOU = 0.05
"""Below this foreground IoU (or its Dice equivalent) for every method, nothing was learnt."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval (NaN bounds when it cannot be estimated)."""

    estimate: float
    low: float
    high: float
    n: int


def _strata(values: pd.Series | np.ndarray, strata: pd.Series | np.ndarray) -> list[np.ndarray]:
    frame = pd.DataFrame({"v": np.asarray(values, dtype=float), "s": np.asarray(strata)})
    frame = frame[np.isfinite(frame["v"])]
    return [g.to_numpy() for _, g in frame.groupby("s", sort=True)["v"]]


def stratified_interval(values: pd.Series | np.ndarray, strata: pd.Series | np.ndarray,
                        confidence: float = CONFIDENCE, n_resamples: int = RESAMPLES,
                        seed: int = SEED) -> Interval:
    """Mean over strata of the stratum means, with a percentile bootstrap interval.

    Values are resampled with replacement within their stratum (a fold), never across: each
    stratum is one sample of SciPy's multi-sample bootstrap. Strata of a single value cannot be
    resampled and enter the statistic as constants; with no stratum of two or more values the
    interval is NaN.
    """
    groups = _strata(values, strata)
    if not groups:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    n = sum(len(g) for g in groups)
    estimate = float(np.mean([g.mean() for g in groups]))
    varying = [g for g in groups if len(g) > 1]
    fixed = sum(g[0] for g in groups if len(g) == 1)
    if not varying:
        return Interval(estimate, float("nan"), float("nan"), n)
    k = len(groups)

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        return (sum(s.mean(axis=axis) for s in samples) + fixed) / k

    res = sps.bootstrap(tuple(varying), statistic, n_resamples=n_resamples, confidence_level=confidence,
                        method="percentile", vectorized=True, random_state=np.random.default_rng(seed))
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high), n)


def paired_frame(ref: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """(fold, case_id) units present for both, with ``ref``, ``base`` and ``diff`` = ref - base."""
    both = ref.merge(base, on=["fold", "case_id"], suffixes=("_ref", "_base"))
    return pd.DataFrame({"fold": both["fold"], "case_id": both["case_id"], "ref": both["value_ref"],
                         "base": both["value_base"], "diff": both["value_ref"] - both["value_base"]})


def per_case(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per case: its mean over the folds that test it (a case is one unit, not one per fold)."""
    return pairs.groupby("case_id", sort=True)[["ref", "base"]].mean()


def min_p_mann_whitney(n1: int, n2: int, alternative: str = "two-sided", method: str = "auto") -> float:
    """Smallest p-value Mann-Whitney U can give on n1 vs n2 values (complete separation)."""
    if n1 == 0 or n2 == 0:
        return float("nan")
    low, high = np.arange(n2, dtype=float), np.arange(n2, n2 + n1, dtype=float)
    ps = [mann_whitney(high, low, alternative, method).pvalue,
          mann_whitney(np.arange(n1, dtype=float), np.arange(n1, n1 + n2, dtype=float), alternative, method).pvalue]
    return float(np.nanmin(ps))


def min_p_wilcoxon(n: int, alternative: str = "two-sided", method: str = "auto") -> float:
    """Smallest p-value the Wilcoxon signed-rank test can give on n pairs (all differences one sign)."""
    if n < 2:
        return float("nan")
    d = np.arange(1, n + 1, dtype=float)
    zeros = np.zeros(n)
    ps = [wilcoxon_paired(d, zeros, alternative, method).pvalue, wilcoxon_paired(-d, zeros, alternative, method).pvalue]
    return float(np.nanmin(ps))


def verdict(p_holm: float, low: float, high: float, alpha: float = SIGNIFICANCE) -> str:
    """The reference against a baseline in words (higher metric is better).

    ``better``/``worse`` need both a Holm-adjusted paired p below ``alpha`` and an interval of
    the difference (reference minus baseline) entirely above/below zero; anything else,
    including a missing p-value or interval, is "no difference detectable at this n".
    """
    significant = bool(np.isfinite(p_holm) and p_holm < alpha)
    if significant and np.isfinite(low) and low > 0:
        return BETTER
    if significant and np.isfinite(high) and high < 0:
        return WORSE
    return SAME


def degenerate_threshold(metric: str) -> float:
    """The ``metric`` value equivalent to :data:`DEGENERATE_IOU` foreground IoU.

    Dice = 2 IoU / (1 + IoU); the two-class mean Dice adds a near-perfect background Dice of 1.
    """
    dice = 2 * DEGENERATE_IOU / (1 + DEGENERATE_IOU)
    return {"iou": DEGENERATE_IOU, "dice": dice, "mean_dice_2class": (dice + 1) / 2}[metric]


def degenerate(means: pd.Series | np.ndarray, metric: str) -> bool:
    """True when every finite cell mean is below :func:`degenerate_threshold` (nothing learnt)."""
    v = np.asarray(means, dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v)) and bool(np.all(v < degenerate_threshold(metric)))


def rank_first(units: dict[str, pd.DataFrame], n_resamples: int = RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """How often each column ranks first over stratified bootstrap samples of the common cases.

    ``units``: per column, (fold, case_id, value) rows. Only (fold, case) units every column has
    are used, resampled within folds jointly for all columns (the same resampled cases score
    every method). Ties share the win. Columns: ``column``, ``p_first``, ``mean_rank``, ``cases``.
    """
    keys = list(units)
    wide = None
    for key in keys:
        part = units[key].set_index(["fold", "case_id"])["value"].rename(key)
        wide = part.to_frame() if wide is None else wide.join(part, how="inner")
    if wide is None or wide.empty or len(keys) < 2:
        return pd.DataFrame(columns=["column", "p_first", "mean_rank", "cases"])
    rng = np.random.default_rng(seed)
    folds = [g.to_numpy() for _, g in wide.groupby(level="fold", sort=True)]
    total = np.zeros((n_resamples, len(keys)))
    for block in folds:
        idx = rng.integers(0, len(block), (n_resamples, len(block)))
        total += block[idx].mean(axis=1)
    stat = total / len(folds)
    best = np.isclose(stat, stat.max(axis=1, keepdims=True), rtol=0, atol=1e-12)
    share = (best / best.sum(axis=1, keepdims=True)).mean(axis=0)
    ranks = sps.rankdata(-stat, axis=1, method="average").mean(axis=0)
    return pd.DataFrame({"column": keys, "p_first": share, "mean_rank": ranks, "cases": len(wide)})
