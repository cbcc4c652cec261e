"""Group-sequential boundaries: Lan-DeMets alpha spending of the O'Brien-Fleming type.

O'Brien and Fleming, "A multiple testing procedure for clinical trials", Biometrics 1979; Lan
and DeMets, "Discrete sequential boundaries for clinical trials", Biometrika 1983. A
two-sided design at level alpha is two one-sided designs at alpha / 2, each spending
2 - 2 Phi(z_{1-alpha/4} / sqrt(t)) by information fraction t (gsDesign's ``sfLDOF`` and rpact's
``asOF`` convention), so the two-sided spending is alpha(t) = 4 - 4 Phi(z_{1-alpha/4} / sqrt(t)); the boundary c_k of look k solves
P(|Z_1| < c_1, ..., |Z_{k-1}| < c_{k-1}, |Z_k| >= c_k) = alpha(t_k) - alpha(t_{k-1}) under the
canonical joint normal of the sequential statistics, corr(Z_i, Z_j) = sqrt(t_i / t_j), and its
nominal level is 2 (1 - Phi(c_k)): a look rejects when its p-value is at or below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

MAX_LOOKS = 10
STEP = 0.01
HALF_WIDTH = 9.0


def obf_spending(t: float | np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Cumulative two-sided alpha spent by information fraction ``t`` (0 at 0, alpha at 1)."""
    t = np.asarray(t, dtype=float)
    z = stats.norm.ppf(1 - alpha / 4)
    safe = np.maximum(t, 1e-300)
    return np.where(t > 0, 4 - 4 * stats.norm.cdf(z / np.sqrt(safe)), 0.0)


def _tail(density: np.ndarray, grid: np.ndarray, bound: float) -> float:
    """Mass of ``density`` (on ``grid``) with |s| >= ``bound`` (linear interpolation at the bound)."""
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * STEP)])
    inside = np.interp(bound, grid, cdf) - np.interp(-bound, grid, cdf)
    return float(cdf[-1] - inside)


def nominal_levels(info: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Two-sided nominal p-value thresholds of looks at increasing information fractions.

    The crossing probabilities are integrated numerically on the score scale S_k = Z_k sqrt(t_k),
    a Brownian motion with independent Normal(0, t_k - t_{k-1}) increments (the recursive
    integration of Armitage, McPherson and Rowe, JRSS-A 1969, which gsDesign and rpact use), on a
    grid of step :data:`STEP`; each boundary solves its look's share of the spending by root
    finding. Hand-written because SciPy has no group-sequential design.
    """
    t = np.asarray(info, dtype=float)
    if len(t) > MAX_LOOKS or np.any(np.diff(t) <= 0) or t[0] <= 0 or not np.isclose(t[-1], 1.0):
        raise ValueError(f"information fractions must increase to 1 over at most {MAX_LOOKS} looks: {list(t)}")
    spend = np.diff(np.concatenate([[0.0], obf_spending(t, alpha)]))
    grid = np.arange(-HALF_WIDTH, HALF_WIDTH + STEP / 2, STEP)
    density = stats.norm.pdf(grid, scale=np.sqrt(t[0]))
    bounds: list[float] = []
    for k in range(len(t)):
        if k:
            inside = np.where(np.abs(grid) < bounds[-1] * np.sqrt(t[k - 1]), density, 0.0)
            kernel = stats.norm.pdf(grid[:, None] - grid[None, :], scale=np.sqrt(t[k] - t[k - 1]))
            density = kernel @ inside * STEP
        scale, share = float(np.sqrt(t[k])), float(spend[k])
        bounds.append(float(optimize.brentq(lambda c, d=density, sc=scale, sh=share: _tail(d, grid, c * sc) - sh,
                                            0.0, HALF_WIDTH / scale, xtol=1e-8)))
    return 2 * (1 - stats.norm.cdf(np.array(bounds)))


@dataclass(frozen=True)
class Look:
    """One planned look: its pairs, information fraction, cumulative alpha spent, nominal level."""

    index: int
    n_pairs: int
    info: float
    spent: float
    nominal_alpha: float


def plan_looks(n_pairs_per_look: Sequence[int], alpha: float = 0.05, family: int = 1) -> list[Look]:
    """The looks of a design; each comparison spends alpha / family (Bonferroni: valid under any
    dependence between the comparisons of the family)."""
    n = np.asarray(n_pairs_per_look, dtype=float)
    info = n / n[-1]
    level = alpha / max(1, family)
    nominal = nominal_levels(info, level)
    spent = obf_spending(info, level)
    return [Look(i, int(k), float(t), float(s), float(a))
            for i, (k, t, s, a) in enumerate(zip(n, info, spent, nominal, strict=True))]


def decided(pvalue: float, look: Look) -> bool:
    """True when ``pvalue`` is at or below the look's nominal level."""
    return bool(np.isfinite(pvalue) and pvalue <= look.nominal_alpha)
