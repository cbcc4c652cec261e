"""The run-level test: exact small-n p-values, floors, Holm, verdict words, batch p-values."""

from __future__ import annotations

import numpy as np
import pytest

from mismatch.stats import runlevel as rl

NAN = float("nan")


def test_exact_small_n_p_values() -> None:
    assert rl.paired_run_test([0.01, 0.02, 0.03]).pvalue == pytest.approx(0.25)  # 2 of 8 sign patterns
    assert rl.paired_run_test([1, 2, 3, 4, 5]).pvalue == pytest.approx(0.0625)  # 2 of 32
    # [3, -1, 2]: patterns with |mean| >= 4/3: (+,+,+), (+,-,+) and their mirrors: 4 of 8
    assert rl.paired_run_test([3, -1, 2]).pvalue == pytest.approx(0.5)
    assert rl.paired_run_test([1, 2, 3]).method == "exact sign-flip permutation"


@pytest.mark.parametrize("n", [2, 3, 6, 8, 12])
def test_floor_is_what_the_test_gives_on_all_positive_differences(n: int) -> None:
    assert rl.min_p_run_test(n) == pytest.approx(2 / 2 ** n)
    assert rl.paired_run_test(np.arange(1, n + 1) * 0.01).pvalue == pytest.approx(rl.min_p_run_test(n))


def test_degenerate_inputs_give_no_p() -> None:
    assert np.isnan(rl.paired_run_test([0.1]).pvalue)
    assert np.isnan(rl.paired_run_test([0.0, 0.0, 0.0]).pvalue)
    assert rl.paired_run_test([0.1, NAN, 0.2, 0.3]).n_pairs == 3
    assert np.isnan(rl.min_p_run_test(1))


def test_monte_carlo_beyond_sixteen_pairs_is_seeded() -> None:
    d = np.random.default_rng(0).normal(0.3, 1, 20)
    a, b = rl.paired_run_test(d), rl.paired_run_test(d)
    assert a.pvalue == b.pvalue and a.method.startswith("Monte-Carlo")


def test_batch_p_values_match_the_scipy_test() -> None:
    d = np.random.default_rng(1).normal(0.2, 1, (20, 7))
    batch = rl.sign_flip_pvalues(d)
    assert batch == pytest.approx([rl.paired_run_test(row).pvalue for row in d])
    with pytest.raises(ValueError, match="at most 14 pairs"):
        rl.sign_flip_pvalues(np.ones((2, 15)))


def test_holm_on_hand_computed_values() -> None:
    assert rl.holm([0.01, 0.04, 0.03, NAN]) == pytest.approx([0.03, 0.06, 0.06, NAN], nan_ok=True)


def test_verdict_words() -> None:
    assert rl.run_verdict(0.01, 0.02, 0.1, 8) == rl.BETTER
    assert rl.run_verdict(0.01, -0.1, -0.02, 8) == rl.WORSE
    assert rl.run_verdict(0.01, -0.01, 0.1, 8) == rl.NOT_SEPARATED
    assert rl.run_verdict(0.06, 0.02, 0.1, 8) == rl.NOT_SEPARATED
    assert rl.run_verdict(NAN, NAN, NAN, 8) == rl.NOT_SEPARATED
    assert rl.run_verdict(0.001, 0.02, 0.1, 1) == rl.NO_VERDICT
