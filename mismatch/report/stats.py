"""The statistics the report prints: rank tests, Holm adjustment, effect size, fits, means.

Thin wrappers over SciPy and NumPy that also say which variant of a test was run (exact or
asymptotic, sidedness, n), because the report prints that under every table. Calibration
(reliability, ECE) is computed from the bin sums by :mod:`mismatch.results`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

ALTERNATIVES = ("two-sided", "less", "greater")
EXACT_MAX_N = 50  # SciPy's exact null distributions are fast well beyond the 10 folds used here


@dataclass(frozen=True)
class TestResult:
    """Outcome of one test; ``method`` is 'exact' or 'asymptotic' ('' when not computable)."""

    statistic: float
    pvalue: float
    method: str
    alternative: str
    n1: int
    n2: int


def _clean(values: np.ndarray | list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def mann_whitney(x: np.ndarray | list[float], y: np.ndarray | list[float],
                 alternative: str = "two-sided", method: str = "auto") -> TestResult:
    """Mann-Whitney U test of x against y; U is the statistic of ``x``.

    ``method='auto'`` is exact when both samples have at most ``EXACT_MAX_N`` values and the
    pooled sample has no ties, else the normal approximation with tie and continuity correction.
    ``alternative='greater'`` tests whether x tends to be larger than y.
    """
    x, y = _clean(x), _clean(y)
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    if len(x) == 0 or len(y) == 0:
        return TestResult(np.nan, np.nan, "", alternative, len(x), len(y))
    if method == "auto":
        pooled = np.concatenate([x, y])
        no_ties = len(np.unique(pooled)) == len(pooled)
        method = "exact" if no_ties and max(len(x), len(y)) <= EXACT_MAX_N else "asymptotic"
    res = stats.mannwhitneyu(x, y, alternative=alternative, method=method, use_continuity=True)
    return TestResult(float(res.statistic), float(res.pvalue), method, alternative, len(x), len(y))


def wilcoxon_paired(x: np.ndarray | list[float], y: np.ndarray | list[float],
                    alternative: str = "two-sided", method: str = "auto") -> TestResult:
    """Wilcoxon signed-rank test on the pairs (x_i, y_i); pairs with a NaN are dropped.

    ``method='auto'`` is exact for at most ``EXACT_MAX_N`` pairs without zero or tied
    differences, else the normal approximation. Fewer than two pairs, or all differences zero,
    give a NaN p-value instead of an error.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    n = len(d)
    if n < 2 or np.all(d == 0):
        return TestResult(np.nan, np.nan, "", alternative, n, n)
    if method == "auto":
        clean = np.all(d != 0) and len(np.unique(np.abs(d))) == n
        method = "exact" if clean and n <= EXACT_MAX_N else "asymptotic"
    res = stats.wilcoxon(x[keep], y[keep], alternative=alternative, method=method)
    return TestResult(float(res.statistic), float(res.pvalue), method, alternative, n, n)


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs are ignored.

    Hand-written because SciPy has only Benjamini-Hochberg (``false_discovery_control``) and
    statsmodels is not a dependency; the family is the finite p-values given.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def rank_biserial(u: float, n1: int, n2: int) -> float:
    """Rank-biserial correlation r = 2U/(n1 n2) - 1 from U of the first sample.

    +1: every value of the first sample exceeds every value of the second; -1: the reverse;
    0: no tendency. Equals the common-language effect size rescaled to [-1, 1].
    """
    if n1 == 0 or n2 == 0 or not np.isfinite(u):
        return float("nan")
    return 2.0 * u / (n1 * n2) - 1.0


def poly_fit(x: np.ndarray, y: np.ndarray, deg: int = 2) -> np.ndarray:
    """Least-squares polynomial coefficients, highest power first (``numpy.polyfit``).

    NaN coefficients when there are fewer distinct x values than coefficients.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[keep])) <= deg:
        return np.full(deg + 1, np.nan)
    return np.polyfit(x[keep], y[keep], deg)


def mean_std(values: np.ndarray | list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1, NaN for one value) and n of the finite values."""
    v = _clean(values)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)
