"""Variance components of per-(run, case) values: one-way random-effects ANOVA (method of moments).

Between-run variance (training runs) and within-run variance (test cases), the classical
unbalanced estimator (Searle, Casella and McCulloch, "Variance Components", 1992, ch. 3) with
n0 = (N - sum n_i^2 / N) / (R - 1); the run variance is truncated at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mismatch.stats.hierarchical import _groups


@dataclass(frozen=True)
class VarianceComponents:
    """Run and case variance of one method's per-(run, case) values."""

    run_var: float
    case_var: float
    n_runs: int
    cases_per_run: float
    mean: float

    @property
    def icc(self) -> float:
        """Share of one value's variance from the run: run_var / (run_var + case_var)."""
        total = self.run_var + self.case_var
        return float(self.run_var / total) if total > 0 else float("nan")

    @property
    def run_mean_var(self) -> float:
        """Variance of one run's mean: run_var + case_var / cases_per_run."""
        return self.run_var + self.case_var / self.cases_per_run

    @property
    def run_share(self) -> float:
        """Share of the variance of one run's mean that comes from the training run."""
        total = self.run_mean_var
        return float(self.run_var / total) if total > 0 else float("nan")


def variance_components(values: np.ndarray, runs: np.ndarray) -> VarianceComponents:
    """Method-of-moments components; NaN run variance with fewer than two runs."""
    groups = [g for g in _groups(np.asarray(values), np.asarray(runs)) if len(g)]
    if not groups:
        return VarianceComponents(float("nan"), float("nan"), 0, float("nan"), float("nan"))
    sizes = np.array([len(g) for g in groups], dtype=float)
    n, r = sizes.sum(), len(groups)
    means = np.array([g.mean() for g in groups])
    grand = float(np.concatenate(groups).mean())
    dof_within = n - r
    ss_within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    case_var = float(ss_within / dof_within) if dof_within > 0 else float("nan")
    if r < 2:
        return VarianceComponents(float("nan"), case_var, r, float(sizes.mean()), grand)
    ms_between = float((sizes * (means - grand) ** 2).sum() / (r - 1))
    n0 = (n - (sizes ** 2).sum() / n) / (r - 1)
    within = case_var if np.isfinite(case_var) else 0.0
    run_var = max(0.0, (ms_between - within) / n0)
    return VarianceComponents(run_var, case_var, r, float(sizes.mean()), float(means.mean()))
