"""Group-sequential boundaries: published values, and the false-positive rate under optional stopping."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mismatch.stats.runlevel import sign_flip_pvalues
from mismatch.stats.sequential import decided, nominal_levels, obf_spending, plan_looks

LOOKS = (6, 8, 10, 12, 14)  # pairs after each round (rounds add seeds)


def test_spending_goes_from_zero_to_alpha() -> None:
    assert obf_spending(0.0) == 0 and obf_spending(1.0) == pytest.approx(0.05)
    assert np.all(np.diff(obf_spending(np.linspace(0.1, 1, 10))) > 0)


def test_boundaries_match_the_published_lan_demets_obrien_fleming_values() -> None:
    # gsDesign (sfLDOF) / rpact (asOF), two-sided 0.05 as 2 x one-sided 0.025, equally spaced looks:
    # 2 looks z = 2.963, 1.969; 5 looks z = 4.877, 3.357, 2.680, 2.290, 2.031 (Jennison and Turnbull,
    # "Group Sequential Methods", 2000, Table 7.6; the gsDesign manual's sfLDOF example).
    z2 = stats.norm.isf(nominal_levels([0.5, 1.0]) / 2)
    z5 = stats.norm.isf(nominal_levels([0.2, 0.4, 0.6, 0.8, 1.0]) / 2)
    assert z2 == pytest.approx([2.963, 1.969], abs=0.005)
    assert z5 == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=0.005)
    assert nominal_levels([1.0]) == pytest.approx([0.05], abs=1e-4)


def test_plan_looks_splits_alpha_over_the_family() -> None:
    looks = plan_looks([6, 12], family=2)
    assert looks[-1].info == 1 and looks[0].info == 0.5
    assert looks[-1].spent == pytest.approx(0.025)
    assert decided(0.0005, looks[0]) and not decided(0.002, looks[0])  # nominal 0.00082 at half the runs
    with pytest.raises(ValueError, match="must increase to 1"):
        nominal_levels([0.5, 0.4, 1.0])


def _first_rejections(diffs: np.ndarray, levels: list[float]) -> np.ndarray:
    """Per study, whether any look rejects at its level (looks at the prefixes in LOOKS)."""
    hit = np.zeros(len(diffs), dtype=bool)
    for n, level in zip(LOOKS, levels, strict=True):
        hit |= sign_flip_pvalues(diffs[:, :n]) <= level
    return hit


def test_false_positive_rate_under_the_null_stays_at_alpha_where_naive_retesting_exceeds_it() -> None:
    diffs = np.random.default_rng(2026).normal(0, 1, (2000, LOOKS[-1]))
    sequential = float(_first_rejections(diffs, [lk.nominal_alpha for lk in plan_looks(LOOKS)]).mean())
    naive = float(_first_rejections(diffs, [0.05] * len(LOOKS)).mean())
    assert sequential <= 0.06, f"sequential FPR {sequential:.3f}, naive {naive:.3f}"
    assert naive > 0.06, f"sequential FPR {sequential:.3f}, naive {naive:.3f}"


def test_a_real_effect_is_found_and_often_early() -> None:
    diffs = np.random.default_rng(3).normal(1.2, 1, (500, LOOKS[-1]))
    looks = plan_looks(LOOKS)
    found = _first_rejections(diffs, [lk.nominal_alpha for lk in looks])
    early = sign_flip_pvalues(diffs[:, :LOOKS[2]]) <= looks[2].nominal_alpha
    assert found.mean() > 0.8 and early.mean() > 0.3
