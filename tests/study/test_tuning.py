"""Tuned values in study files (``tuned:``, ``{best_of: ...}``) and the held-out tuning split."""

import json
from pathlib import Path

import pytest
import yaml

from mismatch.config import ProtocolSpec, SpecError
from mismatch.data.splits import ROLES, held_out_cases, make_all_splits, make_splits, trial_splits
from mismatch.study.best import record_tuning
from mismatch.study.trials import load_study

STUDY = {
    "name": "table",
    "base": {
        "data": {"synthetic": {"kind": "vessels", "cases": 7, "size": [32, 32], "slices": 8}},
        "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2, "tuning_cases": 1},
        "train": {"epochs": 1, "lr": 0.001},
    },
    "methods": [{"name": "mean-teacher"}, {"name": "mismatch", "model": "mm"},
                {"name": "mismatch", "model": "mm", "alpha": 0.0}, {"name": "sup1"}],
    "grid": {"labelled_slices": [2], "fold": [0, 1]},
    "tuned": "tuning",
}
BEST = {
    "study": "tuning", "objective": "val_iou", "folds": [0], "validation_cases": ["case_003"],
    "methods": {
        "mean-teacher": {"params": {"alpha": 0.7, "ema_decay": 0.995, "train.lr": 0.0003}, "objective": 0.4,
                         "candidates": 2, "trials": 2, "train_time_s": 7.2, "validation_cases": ["case_003"]},
        "mismatch": {"params": {"alpha": 0.004, "train.lr": 0.002}, "objective": 0.5, "candidates": 2, "trials": 2,
                     "train_time_s": 9.0, "validation_cases": ["case_003"]},
        "sup1": {"params": {"train.lr": 0.0001}, "objective": 0.3, "candidates": 2, "trials": 2,
                 "train_time_s": 3.6, "validation_cases": ["case_003"]},
    },
}


def _files(tmp_path, study=STUDY, best=BEST):
    (tmp_path / "store" / "tuning").mkdir(parents=True)
    (tmp_path / "store" / "tuning" / "best.json").write_text(json.dumps(best))
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_tuned_gives_each_method_its_own_best_values(tmp_path):
    study = load_study(_files(tmp_path), storage=str(tmp_path / "store"))
    trials = study.trials()
    by_method = {}
    for t in trials:
        by_method.setdefault((t.method.name, getattr(t.method, "alpha", None)), t)
    teacher = by_method[("mean-teacher", 0.7)]
    assert (teacher.method.ema_decay, teacher.train.lr) == (0.995, 0.0003)
    assert by_method[("mismatch", 0.004)].train.lr == 0.002
    # an entry's own value wins over the tuned one (the alpha = 0 control keeps alpha 0, tuned lr)
    assert by_method[("mismatch", 0.0)].train.lr == 0.002
    assert by_method[("sup1", None)].train.lr == 0.0001
    assert len(trials) == 8


def test_tuned_without_a_method_is_an_error_naming_it(tmp_path):
    best = json.loads(json.dumps(BEST))
    del best["methods"]["sup1"]
    with pytest.raises(SpecError, match="tuned no method 'sup1'"):
        load_study(_files(tmp_path, best=best), storage=str(tmp_path / "store"))


def test_best_of_reads_one_value_of_a_per_method_search(tmp_path):
    study = {**STUDY, "tuned": None, "methods": [{"name": "mismatch", "alpha": {"best_of": "tuning"}}]}
    trials = load_study(_files(tmp_path, study=study), storage=str(tmp_path / "store")).trials()
    assert {t.method.alpha for t in trials} == {0.004}
    assert {t.train.lr for t in trials} == {0.001}  # best_of sets only the value it names


def test_record_tuning_copies_the_searches_a_study_names(tmp_path):
    study = load_study(_files(tmp_path), storage=str(tmp_path / "store"))
    record_tuning(study)
    written = json.loads((tmp_path / "store" / "table" / "tuning.json").read_text())
    assert written == {"tuning": BEST}


CASES = [f"case_{i:03d}" for i in range(10)]


def test_held_out_cases_take_no_role_in_any_fold():
    protocol = ProtocolSpec(unlabelled_cases=3, validation_cases=1, test_cases=3, tuning_cases=2)
    held = held_out_cases(CASES, protocol)
    assert len(held) == 2 and held == held_out_cases(list(reversed(CASES)), protocol)
    folds = make_all_splits(CASES, protocol)
    assert len(folds) == 8  # the 8 other cases, one labelled case each
    for splits in folds.values():
        assert not set(held) & {c for r in ROLES for c in splits[r]}
    # a search's candidate trains on the table's fold and validates on the held-out cases
    search = trial_splits(CASES, protocol.model_copy(update={"validate_on": "tuning", "fold": 3}))
    table = make_splits(CASES, protocol.model_copy(update={"fold": 3}))
    assert search["validation"] == held
    assert {r: search[r] for r in ("labelled", "unlabelled", "test")} == {r: table[r] for r in ("labelled", "unlabelled", "test")}


def test_without_tuning_cases_splits_and_trial_ids_are_unchanged(tmp_path):
    protocol = ProtocolSpec(unlabelled_cases=3, validation_cases=1, test_cases=5)
    assert make_splits(CASES, protocol) == trial_splits(CASES, protocol)
    study = {**STUDY, "tuned": None, "base": {**STUDY["base"], "protocol": {"unlabelled_cases": 2, "validation_cases": 1,
                                                                          "test_cases": 2}}}
    spec = load_study(_files(tmp_path, study=study)).trials()[0]
    assert "tuning_cases" not in spec.identity_dict()["protocol"]
    assert "validate_on" not in spec.identity_dict()["protocol"]
    with pytest.raises(ValueError, match="tuning_cases"):
        ProtocolSpec(validate_on="tuning")


def _la_search(tmp_path, **search) -> object:
    raw = yaml.safe_load((Path(__file__).parents[2] / "studies" / "la_ssl.yaml").read_text())
    raw["search"] = {"candidates": 2, **search}
    path = tmp_path / "la.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_study(path)


def test_a_search_on_fixed_lists_scores_each_candidate_on_the_validation_list_once(tmp_path):
    from mismatch.study.search import _search_of

    assert _search_of(_la_search(tmp_path)).folds == [0]  # the default [0, 1, 2] has no folds 1, 2 to score
    assert _search_of(_la_search(tmp_path, folds=[0, 1])).folds == [0, 1]  # what the file says is kept
    assert _search_of(load_study(_write_search_file(tmp_path))).folds == [0, 1, 2]


def _write_search_file(tmp_path):
    raw = {"name": "s", "base": {"data": {"synthetic": {}}}, "methods": [{"name": "mismatch"}], "search": {}}
    path = tmp_path / "folds.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
