"""The report's statistics against SciPy and NumPy on fixed inputs."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from scipy import stats as sps

from mismatch import results
from mismatch.report import stats

MM = [74.8, 76.1, 73.9, 75.5, 74.2, 76.8, 75.0, 73.6, 75.9, 74.4]  # every fold above every baseline fold
SUP1 = [round(m - 4.0 - 0.37 * i, 2) for i, m in enumerate(MM)]  # distinct differences


def test_published_case_u0_ten_vs_ten() -> None:
    """U = 0 on 10 vs 10 folds: the paper's 9.13e-5 is one-sided asymptotic with continuity correction."""
    legacy = stats.mann_whitney(MM, SUP1, alternative="greater", method="asymptotic")
    assert legacy.statistic == 100.0  # U of MisMatch; the baseline's U is 0
    assert legacy.pvalue == pytest.approx(9.1336e-5, rel=1e-3)
    two_sided = stats.mann_whitney(MM, SUP1, alternative="two-sided", method="asymptotic")
    assert two_sided.pvalue == pytest.approx(1.8267e-4, rel=1e-3)
    exact = stats.mann_whitney(MM, SUP1)  # auto: exact, no ties and n small
    assert exact.method == "exact"
    assert exact.pvalue == pytest.approx(2 / comb(20, 10), rel=1e-12)
    assert stats.rank_biserial(exact.statistic, 10, 10) == 1.0
    assert stats.rank_biserial(0.0, 10, 10) == -1.0


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
@pytest.mark.parametrize("method", ["exact", "asymptotic"])
def test_mann_whitney_matches_scipy(alternative: str, method: str) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, 7), rng.normal(0.5, 1, 9)
    ours = stats.mann_whitney(x, y, alternative, method)
    ref = sps.mannwhitneyu(x, y, alternative=alternative, method=method, use_continuity=True)
    assert (ours.statistic, ours.pvalue) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
    assert (ours.n1, ours.n2, ours.method) == (7, 9, method)


def test_mann_whitney_auto_uses_asymptotic_with_ties_and_drops_nan() -> None:
    res = stats.mann_whitney([1.0, 2.0, 2.0, np.nan], [2.0, 3.0, 4.0])
    assert res.method == "asymptotic" and res.n1 == 3
    ref = sps.mannwhitneyu([1.0, 2.0, 2.0], [2.0, 3.0, 4.0], method="asymptotic")
    assert res.pvalue == pytest.approx(ref.pvalue)
    assert np.isnan(stats.mann_whitney([], [1.0]).pvalue)


@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_wilcoxon_matches_scipy(alternative: str) -> None:
    ours = stats.wilcoxon_paired(MM, SUP1, alternative)
    ref = sps.wilcoxon(MM, SUP1, alternative=alternative, method="exact")
    assert ours.method == "exact"
    assert (ours.statistic, ours.pvalue) == pytest.approx((ref.statistic, ref.pvalue))
    assert ours.pvalue == pytest.approx((2 if alternative == "two-sided" else 1) / 2**10)


def test_wilcoxon_degenerate_inputs_give_nan() -> None:
    assert np.isnan(stats.wilcoxon_paired([1.0], [0.0]).pvalue)
    assert np.isnan(stats.wilcoxon_paired([1.0, 2.0], [1.0, 2.0]).pvalue)
    res = stats.wilcoxon_paired([1.0, 2.0, np.nan, 5.0], [0.5, 1.0, 3.0, 1.0])
    assert res.n1 == 3


def test_holm_by_hand() -> None:
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.005])
    # sorted finite: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    expected = np.array([0.03, 0.06, 0.06, np.nan, 0.02])
    np.testing.assert_allclose(stats.holm(p), expected, equal_nan=True)
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1, monotone
    assert np.isnan(stats.holm([np.nan])).all()


def test_reliability_and_ece_from_bin_sums() -> None:
    count = np.array([10, 0, 30, 20, 40])
    conf = count * np.array([0.55, 0.65, 0.75, 0.85, 0.95])
    correct = np.array([4, 0, 24, 18, 39])
    acc, mean_conf = results.reliability(count, conf, correct)
    assert np.isnan(acc[1]) and acc[0] == pytest.approx(0.4)
    manual = sum(count[k] / 100 * abs(correct[k] / count[k] - conf[k] / count[k]) for k in (0, 2, 3, 4))
    assert results.ece_from_bins(count, conf, correct) == pytest.approx(manual)


def test_poly_fit_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 0.2, 200)
    y = 0.8 - 2.0 * x - 5.0 * x**2 + rng.normal(0, 0.01, 200)
    np.testing.assert_allclose(stats.poly_fit(x, y), np.polyfit(x, y, 2), rtol=1e-12)
    assert np.isnan(stats.poly_fit(np.ones(5), np.arange(5.0))).all()


def test_mean_std_is_sample_std() -> None:
    mean, std, n = stats.mean_std([1.0, 2.0, 3.0, np.nan])
    assert (mean, n) == (2.0, 3) and std == pytest.approx(1.0)
    assert np.isnan(stats.mean_std([4.0])[1])
