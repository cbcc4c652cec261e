"""Power and minimum detectable difference (MDD) of the run-level test, for planning.

The power is that of the exact two-sided sign-flip test the report runs
(:mod:`mismatch.stats.runlevel`), at level alpha / family (Holm's strictest step, so the MDD
is conservative for the other comparisons of the family), when the paired run differences are
Normal(delta, sd). Up to :data:`EXACT_MAX` pairs it is a Monte-Carlo estimate over simulated
designs with common random numbers (the same seed for every delta, so the power is monotone in
delta and bisection works); beyond, where the exact test's discreteness no longer matters, the
paired t-test's power from the noncentral t distribution (``scipy.stats.nct``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from mismatch.stats.runlevel import min_p_run_test, sign_flip_pvalues

EXACT_MAX = 10
N_SIM = 4000


def _level(alpha: float, family: int) -> float:
    return alpha / max(1, family)


def power(delta: float, sd: float, n_pairs: int, alpha: float = 0.05, family: int = 1, n_sim: int = N_SIM,
          seed: int = 0) -> float:
    """Probability that the run-level test gives p < alpha / family with ``n_pairs`` pairs."""
    level = _level(alpha, family)
    if n_pairs < 2 or not min_p_run_test(n_pairs) < level:
        return 0.0
    if n_pairs <= EXACT_MAX:
        z = np.random.default_rng(seed).standard_normal((n_sim, n_pairs))
        return float(np.mean(sign_flip_pvalues(delta + sd * z) < level))
    df, ncp = n_pairs - 1, delta / sd * math.sqrt(n_pairs)
    crit = stats.t.ppf(1 - level / 2, df)
    ncp = abs(ncp)
    far = stats.nct.cdf(-crit, df, ncp)  # the wrong-sign tail: NaN from SciPy once it underflows
    return float(stats.nct.sf(crit, df, ncp) + (far if np.isfinite(far) else 0.0))


def mdd(sd: float, n_pairs: int, alpha: float = 0.05, family: int = 1, target: float = 0.8) -> float:
    """Smallest true mean difference detected with ``target`` power (inf when unreachable)."""
    if not (np.isfinite(sd) and sd > 0):
        return float("nan")
    if n_pairs < 2 or not min_p_run_test(n_pairs) < _level(alpha, family):
        return float("inf")
    low, high = 0.0, 20.0 * sd
    if power(high, sd, n_pairs, alpha, family) < target:
        return float("inf")
    while high - low > 1e-4 * sd:
        mid = (low + high) / 2
        low, high = (low, mid) if power(mid, sd, n_pairs, alpha, family) >= target else (mid, high)
    return high


def pairs_for(target_mdd: float, sd: float, alpha: float = 0.05, family: int = 1, target: float = 0.8,
              max_pairs: int = 64) -> int | None:
    """Fewest paired runs whose MDD is at most ``target_mdd`` (None beyond ``max_pairs``)."""
    if not (np.isfinite(target_mdd) and target_mdd > 0 and np.isfinite(sd) and sd > 0):
        return None
    if mdd(sd, max_pairs, alpha, family, target) > target_mdd:
        return None
    low, high = 1, max_pairs  # mdd(low) > target >= mdd(high)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if mdd(sd, mid, alpha, family, target) <= target_mdd else (mid, high)
    return high


def run_diff_sd(run_var_diff: float, case_var_diff: float, cases: float) -> float:
    """SD of one paired run-mean difference from the components of the paired differences."""
    return math.sqrt(run_var_diff + case_var_diff / cases)
