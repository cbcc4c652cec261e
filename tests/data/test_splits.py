"""Fold splits: the labelled-case rule, seeded roles, errors, persistence and leakage checks."""

from __future__ import annotations

import json

import pytest

from mismatch.config import ProtocolSpec
from mismatch.data import (
    LeakageError,
    SplitError,
    check_splits,
    load_splits,
    make_all_splits,
    make_splits,
    n_folds,
    save_splits,
)

CASES = [f"case_{i:02d}" for i in range(10)]
PAPER = ProtocolSpec(labelled_cases=1, unlabelled_cases=3, validation_cases=1, test_cases=5)


def test_fold_f_labels_the_f_th_sorted_case_and_fills_every_role():
    for fold in range(10):
        splits = make_splits(list(reversed(CASES)), PAPER.model_copy(update={"fold": fold}))
        assert splits["labelled"] == [CASES[fold]]
        assert [len(splits[r]) for r in ("unlabelled", "validation", "test")] == [3, 1, 5]
        assert sorted(c for role in splits.values() for c in role) == CASES
        check_splits(splits, CASES)


def test_several_labelled_cases_per_fold():
    protocol = ProtocolSpec(fold=1, labelled_cases=3, unlabelled_cases=0, validation_cases=1, test_cases=1)
    assert make_splits(CASES, protocol)["labelled"] == CASES[3:6]
    protocol = protocol.model_copy(update={"labelled_cases": 4})
    assert make_splits(CASES[:9], protocol)["labelled"] == CASES[4:8]
    assert n_folds(10, 4) == 2
    with pytest.raises(SplitError, match=r"fold 2 does not exist: 10 cases with 4 labelled per fold give folds 0..1"):
        make_splits(CASES, protocol.model_copy(update={"fold": 2}))


def test_roles_are_seeded_by_split_seed_and_fold():
    a = make_splits(CASES, PAPER)
    assert make_splits(CASES, PAPER) == a
    assert make_splits(CASES, PAPER.model_copy(update={"split_seed": 1})) != a
    assert make_all_splits(CASES, PAPER)[0] == a
    assert len(make_all_splits(CASES, PAPER)) == 10


def test_not_enough_cases_is_a_clear_error():
    with pytest.raises(SplitError, match=r"needs 10 cases \(1 labelled, 3 unlabelled, 1 validation, 5 test\) but the dataset has 9"):
        make_splits(CASES[:9], PAPER)
    with pytest.raises(SplitError, match="fold 10 does not exist"):
        make_splits(CASES, PAPER.model_copy(update={"fold": 10}))


def test_leakage_is_detected():
    with pytest.raises(LeakageError, match="'a' is both labelled and test"):
        check_splits({"labelled": ["a"], "unlabelled": ["b"], "validation": ["c"], "test": ["d", "a"]})
    with pytest.raises(LeakageError, match="twice in unlabelled"):
        check_splits({"labelled": ["a"], "unlabelled": ["b", "b"], "validation": [], "test": []})
    with pytest.raises(SplitError, match="not in the dataset"):
        check_splits({"labelled": ["zz"], "unlabelled": [], "validation": [], "test": []}, CASES)


def test_save_load_round_trip_and_leaky_file_is_refused(tmp_path):
    folds = make_all_splits(CASES, PAPER)
    path = save_splits(tmp_path / "out" / "splits.json", folds)
    assert load_splits(path) == folds
    assert list(json.loads(path.read_text())["3"]) == ["labelled", "unlabelled", "validation", "test"]
    raw = json.loads(path.read_text())
    raw["0"]["test"].append(raw["0"]["labelled"][0])
    path.write_text(json.dumps(raw))
    with pytest.raises(LeakageError, match=r"splits\.json, fold 0: case 'case_00' is both labelled and test"):
        load_splits(path)
    with pytest.raises(LeakageError):
        save_splits(tmp_path / "bad.json", {0: {"labelled": ["a"], "test": ["a"]}})
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(SplitError, match="not found"):
        load_splits(tmp_path / "missing.json")
