"""The paper's labelled-count protocol and the unlabelled pool."""

from __future__ import annotations

import numpy as np
import pytest

from mismatch.data import DataError
from mismatch.data.selection import all_qualifying, select_labelled, select_unlabelled

QUALIFYING = {"a": np.array([3, 4, 7, 8, 9]), "b": np.array([0, 1]), "c": np.array([5])}


def test_labelled_are_the_first_n_qualifying_slices_skipping_non_qualifying_ones():
    assert select_labelled(QUALIFYING, ["a"], 3) == [("a", 3), ("a", 4), ("a", 7)]
    assert select_labelled(QUALIFYING, ["a", "b"], 6) == [("a", 3), ("a", 4), ("a", 7), ("a", 8), ("a", 9), ("b", 0)]


def test_too_many_labelled_slices_is_an_error():
    with pytest.raises(DataError, match="6 labelled slices asked.*only 5 qualifying"):
        select_labelled(QUALIFYING, ["a"], 6)


def test_unlabelled_pool_all_or_a_seeded_sample():
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    assert select_unlabelled(QUALIFYING, ["b", "c"], None, rng()) == [("b", 0), ("b", 1), ("c", 5)]
    sample = select_unlabelled(QUALIFYING, ["a", "b", "c"], 4, rng())
    assert len(sample) == 4 and sample == select_unlabelled(QUALIFYING, ["a", "b", "c"], 4, rng())
    pool = all_qualifying(QUALIFYING, ["a", "b", "c"])
    assert sample == sorted(sample, key=pool.index)  # kept in case / slice order
    with pytest.raises(DataError, match="9 unlabelled slices asked.*only 8"):
        select_unlabelled(QUALIFYING, ["a", "b", "c"], 9, rng())
