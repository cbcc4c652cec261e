"""The benchmarks' presets and fixed splits: LA's train.list / test.list and ACDC's
train / val / test lists give one split, labelled = the first N training patients (UA-MT,
SSL4MIS), the ``labelled_cases`` grid axis, and the shipped benchmark study files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mismatch.cli import main
from mismatch.config import DATA_PRESETS, PROTOCOL_PRESETS, DataSpec, ProtocolSpec, SpecError, load_trial_spec
from mismatch.data import DataError, load_trial_data, n_folds_of
from mismatch.data.errors import SplitError
from mismatch.data.h5layouts import case_lists, fixed_lists, patient_of, write_list
from mismatch.data.splits import CaseLists, check_splits, list_splits, make_all_splits, trial_splits
from mismatch.data.synth import write_synthetic_dataset
from mismatch.study.trials import load_study

STUDIES = Path(__file__).parents[2] / "studies"


@pytest.fixture(scope="module")
def la_root(tmp_path_factory):
    """10 LA-like volumes: train.list names la_000..la_007, test.list la_008 and la_009."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("la") / "la", "la2018-h5", 10, size=(24, 24), slices=6)


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory):
    """10 ACDC-like patients, two frames each: 7 train, 1 val, 2 test patients."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("acdc") / "acdc", "acdc-h5", 10, size=(24, 20), slices=4)


def _la_lists(n_train: int = 10, n_test: int = 3) -> CaseLists:
    return CaseLists(train=tuple((f"t{i}",) for i in range(n_train)), validation=(),
                     test=tuple(f"x{i}" for i in range(n_test)))


# ----------------------------------------------------------------------------- presets


def test_benchmark_data_presets():
    la = DataSpec(root="/data/LA", preset="la2018")
    assert (la.layout, la.foreground_labels, la.normalise, la.min_foreground, la.crop) == (
        "la2018-h5", (1,), "none", 0, "none")
    acdc = DataSpec(root="/data/ACDC", preset="acdc")
    assert (acdc.layout, acdc.normalise, acdc.min_foreground, acdc.crop) == ("acdc-h5", "none", 0, "none")


def test_la_preset_is_3d_with_the_ua_mt_patch():
    la = DataSpec(root="/data/LA", preset="la2018")
    assert (la.spatial_dims, tuple(la.patch_size)) == (3, (80, 112, 112))


def test_acdc_preset_is_three_class():
    acdc = DataSpec(root="/data/ACDC", preset="acdc")
    assert tuple(acdc.classes) == (1, 2, 3) and acdc.num_classes == 4


def test_benchmark_protocol_presets():
    expected = {"la-8": (8, 4), "la-16": (16, 4), "acdc-3": (3, 1), "acdc-7": (7, 1)}
    for name, (labelled, validation) in expected.items():
        p = ProtocolSpec(preset=name)
        assert (p.split, p.labelled_cases, p.unlabelled_cases, p.labelled_slices) == ("lists", labelled, "rest", None)
        assert p.validation_cases == validation, name


def test_data_presets_lists_every_preset(capsys):
    assert main(["data", "presets"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert listed == set(DATA_PRESETS.names()) | set(PROTOCOL_PRESETS.names())
    assert {"la2018", "acdc", "la-8", "la-16", "acdc-3", "acdc-7"} <= listed
    assert 'split="lists"' in out


def test_list_protocol_has_one_fold_and_no_tuning_cases():
    with pytest.raises(ValueError, match="fold 1 does not exist"):
        ProtocolSpec(preset="la-8", fold=1)
    with pytest.raises(ValueError, match="takes no tuning_cases"):
        ProtocolSpec(preset="la-8", tuning_cases=2)
    with pytest.raises(ValueError, match="labelled_slices"):
        ProtocolSpec(labelled_slices=0)


def test_fold_protocols_keep_their_trial_ids(tiny_dict):
    spec = load_trial_spec(tiny_dict())
    assert "split" not in spec.identity_dict()["protocol"]
    lists = load_trial_spec({**tiny_dict(), "protocol": {**tiny_dict()["protocol"], "split": "lists"}})
    assert lists.identity_dict()["protocol"]["split"] == "lists" and lists.trial_id() != spec.trial_id()


# ----------------------------------------------------------------------------- splits from lists


def test_la_lists_label_the_first_cases_of_train_list_and_validate_on_its_last():
    splits = list_splits(_la_lists(), ProtocolSpec(preset="la-8", labelled_cases=3, validation_cases=2))
    assert splits == {"labelled": ["t0", "t1", "t2"], "unlabelled": ["t3", "t4", "t5", "t6", "t7"],
                      "validation": ["t8", "t9"], "test": ["x0", "x1", "x2"]}
    check_splits(splits)


def test_list_label_draws_rotate_the_training_patients_and_keep_validation_and_test():
    protocol = ProtocolSpec(preset="la-8", labelled_cases=3, validation_cases=2, label_draw=1)
    splits = list_splits(_la_lists(), protocol)
    assert splits["labelled"] == ["t3", "t4", "t5"]
    assert splits["unlabelled"] == ["t6", "t7", "t0", "t1", "t2"]
    assert (splits["validation"], splits["test"]) == (["t8", "t9"], ["x0", "x1", "x2"])


def test_list_unlabelled_count_and_too_many_labelled():
    lists = _la_lists()
    some = list_splits(lists, ProtocolSpec(preset="la-8", labelled_cases=2, validation_cases=1, unlabelled_cases=3))
    assert some["unlabelled"] == ["t2", "t3", "t4"]
    with pytest.raises(SplitError, match="9 labelled and 4 validation cases asked but the training list names 10"):
        list_splits(lists, ProtocolSpec(preset="la-8", labelled_cases=9))
    with pytest.raises(SplitError, match="5 unlabelled cases asked but the training list has 4"):
        list_splits(lists, ProtocolSpec(preset="la-8", labelled_cases=2, unlabelled_cases=5))
    with pytest.raises(SplitError, match="needs a dataset with case lists"):
        trial_splits(["a", "b"], ProtocolSpec(preset="la-8"))


def test_acdc_lists_count_patients_and_take_val_list(acdc_root):
    lists = fixed_lists("acdc-h5", acdc_root)
    raw = case_lists("acdc-h5", acdc_root)
    assert len(lists.train) == 7 and all(len(p) == 2 for p in lists.train)  # ED and ES frames
    assert [c for p in lists.train for c in p] == raw["train"]
    assert (list(lists.validation), list(lists.test)) == (raw["val"], raw["test"])
    splits = list_splits(lists, ProtocolSpec(preset="acdc-3"))
    assert splits["labelled"] == ["patient001_frame01", "patient001_frame10", "patient002_frame01",
                                  "patient002_frame10", "patient003_frame01", "patient003_frame10"]
    assert {patient_of("acdc-h5", c) for c in splits["unlabelled"]} == {f"patient{i:03d}" for i in range(4, 8)}
    assert splits["validation"] == ["patient008_frame01", "patient008_frame10"]
    assert splits["test"] == [f"patient{i:03d}_frame{f}" for i in (9, 10) for f in ("01", "10")]
    assert patient_of("la2018-h5", "patient001_frame01") == "patient001_frame01"


def test_la_trial_data_from_lists(la_root):
    data = DataSpec(root=str(la_root), preset="la2018", patch_size=[16, 32, 32])  # a patch the tiny volumes fit
    protocol = ProtocolSpec(preset="la-8", labelled_cases=2, validation_cases=1)
    trial = load_trial_data(data, protocol)
    assert trial.splits == {"labelled": ["la_000", "la_001"], "unlabelled": [f"la_00{i}" for i in range(2, 7)],
                            "validation": ["la_007"], "test": ["la_008", "la_009"]}
    # 3D: the labelled cases are whole volumes, every slice of them labelled
    assert trial.spatial_dims == 3 and trial.labelled.case_ids == ["la_000", "la_001"]
    assert len(trial.unlabelled.images) == 5 and trial.test.case_ids == ["la_008", "la_009"]
    assert trial.lists == fixed_lists("la2018-h5", la_root)
    assert n_folds_of(data, protocol) == 1
    assert make_all_splits(trial.cases, protocol, trial.lists) == {0: trial.splits}
    # seeds and the fold protocol's split_seed do not move a fixed split
    again = load_trial_data(data, protocol.model_copy(update={"split_seed": 7}))
    assert again.splits == trial.splits
    for a, b in zip(again.test.labels, trial.test.labels, strict=True):
        np.testing.assert_array_equal(a, b)


def test_lists_naming_absent_cases_and_sources_without_lists(la_root, tmp_path):
    import shutil

    root = Path(shutil.copytree(la_root, tmp_path / "la"))
    write_list(root / "test.list", ["la_008", "la_099"])
    with pytest.raises(SplitError, match="la_099"):
        load_trial_data(DataSpec(root=str(root), preset="la2018"), ProtocolSpec(preset="la-8", labelled_cases=2))
    phantom = DataSpec(synthetic={"kind": "vessels", "cases": 4, "size": [16, 16], "slices": 4})
    with pytest.raises(DataError, match="reads the list files of a raw dataset"):
        load_trial_data(phantom, ProtocolSpec(preset="la-8", labelled_cases=1), cache_dir=tmp_path / "cache")


@pytest.mark.slow  # seconds of training: CI runs it, the developer loop leaves it out
def test_a_tiny_acdc_trial_on_fixed_lists(acdc_root):
    from mismatch.trial.run import run_trial

    spec = load_trial_spec({
        "study": "tiny", "data": {"root": str(acdc_root), "preset": "acdc"},
        "protocol": {"preset": "acdc-3", "labelled_cases": 1},
        "method": {"name": "sup1", "width": 4},
        "train": {"epochs": 1, "snapshot_k": 1, "device": "cpu", "prediction_maps": 1},
    })
    result = run_trial(spec)
    trial = result.trial
    assert trial["labelled_slices"] == 2 * 4  # every slice of patient001's two frames
    assert result.splits == {"0": {"labelled": ["patient001_frame01", "patient001_frame10"],
                                   "unlabelled": [f"patient{i:03d}_frame{f}" for i in range(2, 8) for f in ("01", "10")],
                                   "validation": ["patient008_frame01", "patient008_frame10"],
                                   "test": [f"patient{i:03d}_frame{f}" for i in (9, 10) for f in ("01", "10")]}}
    assert set(result.images["case_id"]) == set(result.splits["0"]["test"])


# ----------------------------------------------------------------------------- study files


def test_labelled_cases_grid_axis_expands_and_names_its_key(tmp_path):
    study = {
        "name": "cases", "base": {"data": {"root": "data/LA", "preset": "la2018"}, "protocol": {"preset": "la-8"}},
        "methods": [{"name": "sup1"}, {"name": "mean-teacher"}],
        "grid": {"labelled_cases": [8, 16], "seed": [0, 1]},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    trials = load_study(path).trials()
    assert len(trials) == 8
    assert {(t.method.name, t.protocol.labelled_cases, t.train.seed) for t in trials} == {
        (m, n, s) for m in ("sup1", "mean-teacher") for n in (8, 16) for s in (0, 1)}
    assert {t.protocol.split for t in trials} == {"lists"}
    study["grid"]["labelled_cases"] = [8, 0]
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(SpecError, match="labelled_cases"):
        load_study(path)


@pytest.mark.parametrize(("name", "budgets", "preset"), [("la_ssl", (8, 16), "la2018"), ("acdc_ssl", (3, 7), "acdc")])
def test_benchmark_studies_parse_and_expand(name, budgets, preset):
    path = STUDIES / f"{name}.yaml"
    full = load_study(path).trials()
    assert len(full) == 4 * 2 * 3  # methods x budgets x seeds
    assert {t.method.name for t in full} == {"sup1", "mean-teacher", "ua-mt", "mismatch"}
    assert {t.protocol.labelled_cases for t in full} == set(budgets)
    assert {(t.protocol.split, t.protocol.fold, t.data.preset) for t in full} == {("lists", 0, preset)}
    smoke = load_study(path, profile="smoke").trials()
    assert len(smoke) == 4 * 2 and {t.protocol.labelled_cases for t in smoke} == {1, 2}
    assert all(t.data.root.endswith("-smoke") for t in smoke)
