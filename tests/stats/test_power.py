"""Power and MDD of the exact run-level test, checked against case-level simulation."""

from __future__ import annotations

import numpy as np
import pytest

from mismatch.stats import power as pw
from mismatch.stats.runlevel import sign_flip_pvalues


def _simulated_power(delta: float, run_sd: float, case_sd: float, cases: int, pairs: int, level: float,
                     seed: int) -> float:
    """1,000 studies drawn at the case level: a run effect per pair plus case noise, tested per run."""
    rng = np.random.default_rng(seed)
    runs = delta + rng.normal(0, run_sd, (1000, pairs, 1)) + rng.normal(0, case_sd, (1000, pairs, cases))
    return float(np.mean(sign_flip_pvalues(runs.mean(axis=2)) < level))


@pytest.mark.parametrize(("pairs", "family"), [(8, 1), (10, 2), (6, 1)])
def test_power_at_the_mdd_matches_1000_simulated_studies(pairs: int, family: int) -> None:
    run_sd, case_sd, cases = 0.02, 0.06, 30
    sd = pw.run_diff_sd(run_sd ** 2, case_sd ** 2, cases)
    d = pw.mdd(sd, pairs, family=family)
    simulated = _simulated_power(d, run_sd, case_sd, cases, pairs, 0.05 / family, seed=pairs)
    assert simulated == pytest.approx(0.80, abs=0.05), f"MDD {d:.4f}: simulated power {simulated:.3f}"


def test_mdd_shrinks_with_pairs_and_is_infinite_below_the_floor() -> None:
    assert pw.mdd(1.0, 5) == float("inf")  # 2/2^5 = 0.0625 cannot pass 0.05
    assert pw.mdd(1.0, 6, family=2) == float("inf")  # 0.031 cannot pass 0.025
    values = [pw.mdd(1.0, n) for n in (6, 8, 12, 30)]
    assert values == sorted(values, reverse=True)
    assert pw.mdd(1.0, 30) == pytest.approx(2.8 / np.sqrt(30), rel=0.1)  # normal formula (1.96 + 0.84) s / sqrt(n)
    assert np.isnan(pw.mdd(float("nan"), 8))


def test_pairs_for_is_the_first_design_reaching_the_target() -> None:
    n = pw.pairs_for(0.5, 1.0)
    assert n is not None and pw.mdd(1.0, n) <= 0.5 < pw.mdd(1.0, n - 1)
    assert pw.pairs_for(0.01, 1.0, max_pairs=64) is None
