"""Fold splits: which cases are labelled, unlabelled, validation and test in each fold.

Fold ``f`` (with ``L`` labelled cases out of ``n`` sorted cases) labels cases
``cases[(f * L + j) % n]`` for ``j < L``: with one labelled case, fold ``f`` labels the
``f``-th case, as in the paper's 10-fold CARVE protocol. The remaining cases, in sorted
order, are permuted by ``numpy.random.default_rng([split_seed, fold])`` and taken in that
order as unlabelled, validation and test cases; any left over are not used
(``unlabelled_cases: rest`` takes all of them). There are ``n // L`` folds. With
``tuning_cases: k``, :func:`held_out_cases` first sets ``k`` cases aside (seeded, the same for
every fold); the folds are made from the rest, and a search scores on the set-aside cases.

Label draws (``protocol.label_draw``, :func:`draw_labelled`): draw ``d`` labels the next
``L`` cases of the fold's training cases (labelled then unlabelled, in split order) after
rotating by ``d * L``; the case(s) it replaces become unlabelled. Validation and test cases
never change, so every draw of a fold is scored on the same test cases. Draw 0 is the split
above, exactly.

Fixed lists (``protocol.split: lists``, :func:`list_splits`): a benchmark's list files give one
split (fold 0), as UA-MT and SSL4MIS use them. The training list's first ``labelled_cases``
patients (a patient is one case, except ACDC's two frames) are labelled (UA-MT:
``labeled_idxs = list(range(16))`` over train.list; SSL4MIS: the first 68 / 136 slices of
train_slices.list, i.e. the first 3 / 7 patients), the other training patients unlabelled
(``unlabelled_cases: rest``, or the next ``k``), the validation list validates (without one, the
last ``validation_cases`` training patients do) and the test list tests. Label draw ``d``
rotates the training patients by ``d * labelled_cases`` first. Seeds vary; the split does not.

``splits.json`` maps each fold (as a string) to its roles::

    {"0": {"labelled": ["c0"], "unlabelled": [...], "validation": [...], "test": [...]}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mismatch.atomic import write_atomic
from mismatch.config import ProtocolSpec
from mismatch.data.errors import LeakageError, SplitError

ROLES = ("labelled", "unlabelled", "validation", "test")
#: Seeds the choice of held-out tuning cases (a stream apart from every fold's permutation).
TUNING_ENTROPY = 0x7E57

Splits = dict[str, list[str]]


@dataclass(frozen=True)
class CaseLists:
    """A benchmark's fixed lists: ``train`` holds the training patients in list order, each as
    its cases (LA: one volume; ACDC: the ED and ES frames); ``validation`` may be empty."""

    train: tuple[tuple[str, ...], ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]


def n_folds(n_cases: int, labelled_cases: int) -> int:
    """Number of folds: how many disjoint groups of labelled cases the cases make."""
    return n_cases // labelled_cases


def make_splits(case_ids: Sequence[str], protocol: ProtocolSpec) -> Splits:
    """The cases of each role in fold ``protocol.fold``; see the module docstring."""
    held = set(held_out_cases(case_ids, protocol))
    cases = [c for c in sorted(case_ids) if c not in held]
    n, counts = len(cases), _role_counts(protocol, len(cases))
    if len(set(cases)) != n:
        raise SplitError("case ids must be unique")
    needed = sum(counts.values())
    if needed > n:
        wanted = ", ".join(f"{counts[r]} {r}" for r in ROLES)
        raise SplitError(f"a fold needs {needed} cases ({wanted}) but the dataset has {n}"
                         + (f" once {len(held)} tuning cases are set aside" if held else ""))
    folds = n_folds(n, protocol.labelled_cases)
    if protocol.fold >= folds:
        raise SplitError(
            f"fold {protocol.fold} does not exist: {n} cases with "
            f"{protocol.labelled_cases} labelled per fold give folds 0..{folds - 1}"
        )
    labelled = [cases[(protocol.fold * protocol.labelled_cases + j) % n] for j in range(counts["labelled"])]
    taken = set(labelled)
    rest = [c for c in cases if c not in taken]
    rng = np.random.default_rng([protocol.split_seed, protocol.fold])
    rest = [rest[i] for i in rng.permutation(len(rest))]
    splits: Splits = {"labelled": labelled}
    start = 0
    for role in ROLES[1:]:
        splits[role] = rest[start : start + counts[role]]
        start += counts[role]
    return draw_labelled(splits, protocol.label_draw)


def draw_labelled(splits: Splits, draw: int) -> Splits:
    """The split with label draw ``draw`` applied (see the module docstring); draw 0 is ``splits``.

    The training cases (labelled + unlabelled, in split order) are rotated by ``draw * L``;
    the first ``L`` become labelled and the rest, in the same order, unlabelled. With no
    unlabelled case the labelled case(s) stay, and only the first labelled slice moves.
    """
    n_lab = len(splits["labelled"])
    pool = [*splits["labelled"], *splits["unlabelled"]]
    if draw == 0 or len(pool) == n_lab:
        return splits
    shift = (draw * n_lab) % len(pool)
    rotated = pool[shift:] + pool[:shift]
    labelled = rotated[:n_lab]
    return {**splits, "labelled": labelled, "unlabelled": [c for c in pool if c not in labelled]}


def held_out_cases(case_ids: Sequence[str], protocol: ProtocolSpec) -> list[str]:
    """The ``protocol.tuning_cases`` cases set aside for tuning, the same in every fold.

    They are the first cases of a permutation of the sorted cases by
    ``default_rng([split_seed, TUNING_ENTROPY])`` and take no role in any fold of the table.
    """
    cases = sorted(case_ids)
    if not protocol.tuning_cases:
        return []
    if protocol.tuning_cases >= len(cases):
        raise SplitError(f"tuning_cases = {protocol.tuning_cases} leaves none of the {len(cases)} cases for the folds")
    order = np.random.default_rng([protocol.split_seed, TUNING_ENTROPY]).permutation(len(cases))
    return sorted(cases[i] for i in order[: protocol.tuning_cases])


def list_splits(lists: CaseLists, protocol: ProtocolSpec) -> Splits:
    """The one split a benchmark's lists give (see the module docstring)."""
    groups, n_lab = list(lists.train), protocol.labelled_cases
    validation = list(lists.validation)
    if not validation:
        if protocol.validation_cases + n_lab > len(groups):
            raise SplitError(f"{n_lab} labelled and {protocol.validation_cases} validation cases asked but the "
                             f"training list names {len(groups)}")
        validation = [c for g in groups[len(groups) - protocol.validation_cases:] for c in g]
        groups = groups[: len(groups) - protocol.validation_cases]
    if n_lab > len(groups):
        raise SplitError(f"{n_lab} labelled cases asked but the training list names {len(groups)}"
                         + ("" if lists.validation else " besides the validation cases"))
    shift = (protocol.label_draw * n_lab) % len(groups)
    groups = groups[shift:] + groups[:shift]
    rest = groups[n_lab:]
    if protocol.unlabelled_cases != "rest":
        if protocol.unlabelled_cases > len(rest):
            raise SplitError(f"{protocol.unlabelled_cases} unlabelled cases asked but the training list has "
                             f"{len(rest)} besides the {n_lab} labelled")
        rest = rest[: protocol.unlabelled_cases]
    return {"labelled": [c for g in groups[:n_lab] for c in g], "unlabelled": [c for g in rest for c in g],
            "validation": validation, "test": list(lists.test)}


def trial_splits(case_ids: Sequence[str], protocol: ProtocolSpec, lists: CaseLists | None = None) -> Splits:
    """The splits a trial uses: :func:`make_splits`, whose validation cases are the held-out
    tuning cases when ``protocol.validate_on`` is ``tuning`` (a search's candidates); under
    ``split: lists``, :func:`list_splits` of the dataset's ``lists``."""
    if protocol.split == "lists":
        if lists is None:
            raise SplitError("split: lists needs a dataset with case lists (the la2018-h5 and acdc-h5 layouts "
                             "read from their raw root)")
        return list_splits(lists, protocol)
    splits = make_splits(case_ids, protocol)
    if protocol.validate_on == "tuning":
        splits = {**splits, "validation": held_out_cases(case_ids, protocol)}
    return splits


def make_all_splits(
    case_ids: Sequence[str], protocol: ProtocolSpec, lists: CaseLists | None = None
) -> dict[int, Splits]:
    """The splits of every fold, with the rest of ``protocol`` unchanged (fixed lists: fold 0)."""
    if protocol.split == "lists":
        return {0: trial_splits(case_ids, protocol, lists)}
    folds = n_folds(len(case_ids) - protocol.tuning_cases, protocol.labelled_cases)
    return {f: trial_splits(case_ids, protocol.model_copy(update={"fold": f})) for f in range(folds)}


def _role_counts(protocol: ProtocolSpec, n_cases: int) -> dict[str, int]:
    """Cases per role; ``unlabelled_cases: rest`` is whatever the other roles leave (>= 0)."""
    others = protocol.labelled_cases + protocol.validation_cases + protocol.test_cases
    unlabelled = protocol.unlabelled_cases
    return {
        "labelled": protocol.labelled_cases,
        "unlabelled": max(n_cases - others, 0) if unlabelled == "rest" else int(unlabelled),
        "validation": protocol.validation_cases,
        "test": protocol.test_cases,
    }


def check_splits(splits: Mapping[str, Sequence[str]], known_cases: Sequence[str] | None = None) -> None:
    """Raise :class:`LeakageError` if a case appears in two roles (or twice in one).

    With ``known_cases``, a case that is not among them is a :class:`SplitError`.
    """
    unknown_roles = set(splits) - set(ROLES)
    if unknown_roles:
        raise SplitError(f"unknown roles {sorted(unknown_roles)} (expected {list(ROLES)})")
    seen: dict[str, str] = {}
    for role in ROLES:
        for case in splits.get(role, []):
            if case in seen:
                where = f"both {seen[case]} and {role}" if seen[case] != role else f"twice in {role}"
                raise LeakageError(f"case {case!r} is {where}")
            seen[case] = role
    if known_cases is not None:
        missing = sorted(set(seen) - set(known_cases))
        if missing:
            raise SplitError(f"splits name cases that are not in the dataset: {missing}")


def save_splits(path: str | Path, folds: Mapping[int, Mapping[str, Sequence[str]]]) -> Path:
    """Write ``{fold: {role: [case, ...]}}`` to ``path`` as JSON, atomically, after checking it.

    To store one trial's splits: ``save_splits(path, {protocol.fold: trial_data.splits})``.
    """
    path = Path(path)
    data = {}
    for fold, splits in sorted(folds.items()):
        check_splits(splits)
        data[str(int(fold))] = {role: list(splits.get(role, [])) for role in ROLES}
    write_atomic(path, json.dumps(data, indent=2) + "\n")
    return path


def load_splits(path: str | Path) -> dict[int, Splits]:
    """Read a file written by :func:`save_splits`; checks every fold for leakage."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SplitError(f"splits file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as err:
        raise SplitError(f"cannot read splits file {path}: {err}") from None
    if not isinstance(raw, dict):
        raise SplitError(f"{path}: expected an object mapping folds to roles")
    folds: dict[int, Splits] = {}
    for key, splits in raw.items():
        if not key.isdigit() or not isinstance(splits, dict):
            raise SplitError(f"{path}: fold {key!r} must be an integer mapped to roles")
        try:
            check_splits(splits)
        except SplitError as err:
            raise type(err)(f"{path}, fold {key}: {err}") from None
        folds[int(key)] = {role: [str(c) for c in splits.get(role, [])] for role in ROLES}
    return folds
