"""Which slices of which cases a trial uses (the paper's labelled-count protocol).

A slice *qualifies* when it has more than ``min_foreground`` foreground pixels. Slices are
named by ``(case_id, slice_index)``.

- Labelled: the first ``n`` qualifying slices, walking the labelled cases in split order
  and each case's qualifying slices in ascending slice index. "Consecutive" means
  consecutive among qualifying slices: a non-qualifying slice in between is skipped, not
  counted. A label draw ``d > 0`` starts at a seeded position instead of the first
  qualifying slice (:func:`labelled_start`); draw 0 starts at the first.
- Unlabelled: every qualifying slice of the unlabelled cases, or a seeded random sample
  of ``n`` of them (kept in case / slice order).
- Validation and test: every qualifying slice of their cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mismatch.data.errors import DataError

SliceRef = tuple[str, int]


def all_qualifying(qualifying: Mapping[str, np.ndarray], cases: Sequence[str]) -> list[SliceRef]:
    """Every qualifying slice of ``cases``, in case order then slice order."""
    return [(case, int(s)) for case in cases for s in qualifying[case]]


def select_labelled(
    qualifying: Mapping[str, np.ndarray], cases: Sequence[str], n: int | None,
    rng: np.random.Generator | None = None,
) -> list[SliceRef]:
    """``n`` consecutive qualifying slices of the labelled ``cases`` (see module docstring):
    the first ``n``, or from a start drawn by ``rng`` (:func:`labelled_start`) when given;
    ``n`` None: every qualifying slice of the cases (a labelled budget counted in cases)."""
    pool = all_qualifying(qualifying, cases)
    if n is None:
        return pool
    if n > len(pool):
        raise DataError(
            f"{n} labelled slices asked but the labelled case(s) {list(cases)} have only "
            f"{len(pool)} qualifying slices (lower labelled_slices or min_foreground)"
        )
    start = labelled_start(len(pool), n, rng) if rng is not None else 0
    return pool[start : start + n]


def labelled_start(pool: int, n: int, rng: np.random.Generator) -> int:
    """A seeded first labelled slice: uniform over the starts that leave ``n`` slices."""
    return int(rng.integers(0, pool - n + 1))


def select_unlabelled(
    qualifying: Mapping[str, np.ndarray],
    cases: Sequence[str],
    n: int | None,
    rng: np.random.Generator,
) -> list[SliceRef]:
    """All qualifying slices of the unlabelled ``cases``, or a random ``n`` of them."""
    pool = all_qualifying(qualifying, cases)
    if n is None:
        return pool
    if n > len(pool):
        raise DataError(
            f"{n} unlabelled slices asked but the unlabelled cases have only {len(pool)} "
            "qualifying slices"
        )
    chosen = np.sort(rng.choice(len(pool), size=n, replace=False))
    return [pool[i] for i in chosen]
