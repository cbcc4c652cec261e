"""The run-level paired test: exact sign-flip permutation test of the mean paired run difference.

Under "no difference between the methods" each paired run's difference (reference minus
baseline on the same split) is as likely positive as negative, so the 2^n sign patterns are
equally likely (Fisher's and Pitman's permutation test of a paired mean). Exact with n <= 16
pairs (``scipy.stats.permutation_test``), Monte-Carlo beyond.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import stats

BETTER, WORSE, NOT_SEPARATED, NO_VERDICT = "better", "worse", "not separated", "no verdict"
EXACT_MAX = 16
MC_RESAMPLES = 2 ** 16
TOLERANCE = 1e-12
"""Pattern means within this of the observed one count as at least as extreme (float noise)."""


@dataclass(frozen=True)
class RunTest:
    """Outcome of the run-level test; ``method`` is '' when it could not be computed."""

    mean_diff: float
    pvalue: float
    n_pairs: int
    method: str


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def paired_run_test(diffs: np.ndarray | list[float]) -> RunTest:
    """Two-sided paired sign-flip test that the mean of ``diffs`` is 0 (NaNs dropped)."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2 or np.all(d == 0):
        return RunTest(float(d.mean()) if n else float("nan"), float("nan"), n, "")
    exact = n <= EXACT_MAX
    res = stats.permutation_test((d,), _mean, permutation_type="samples", vectorized=True,
                                 n_resamples=np.inf if exact else MC_RESAMPLES, alternative="two-sided",
                                 random_state=np.random.default_rng(0))
    method = "exact sign-flip permutation" if exact else f"Monte-Carlo sign-flip permutation ({MC_RESAMPLES} resamples, seed 0)"
    return RunTest(float(d.mean()), float(min(1.0, res.pvalue)), n, method)


def min_p_run_test(n: int) -> float:
    """The smallest two-sided p ``n`` pairs can give (all one sign): 2 / 2^n (NaN below 2 pairs)."""
    return float("nan") if n < 2 else min(1.0, 2.0 / 2 ** n)


def sign_patterns(n: int) -> np.ndarray:
    """All 2^n sign vectors (rows) of length ``n``."""
    return np.array(list(itertools.product((1.0, -1.0), repeat=n)))


def sign_flip_pvalues(diffs: np.ndarray) -> np.ndarray:
    """Exact two-sided sign-flip p-values of many studies at once (rows: studies, columns: pairs)."""
    d = np.asarray(diffs, dtype=float)
    n = d.shape[1]
    if n > 14:
        raise ValueError(f"sign_flip_pvalues enumerates 2^n patterns: at most 14 pairs, got {n}")
    means = np.abs(d @ sign_patterns(n).T) / n  # studies x patterns
    observed = np.abs(d.mean(axis=1, keepdims=True))
    return np.mean(means >= observed - TOLERANCE, axis=1)


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


def run_verdict(p_holm: float, low: float, high: float, n_pairs: int, alpha: float = 0.05) -> str:
    """``better``/``worse`` only when the Holm-adjusted run-level p < ``alpha`` and the two-level
    interval of the difference excludes 0 on that side; ``no verdict`` with fewer than 2 pairs."""
    if n_pairs < 2:
        return NO_VERDICT
    significant = bool(np.isfinite(p_holm) and p_holm < alpha)
    if significant and np.isfinite(low) and low > 0:
        return BETTER
    if significant and np.isfinite(high) and high < 0:
        return WORSE
    return NOT_SEPARATED
