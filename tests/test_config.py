"""Strict spec loading: typos name the key and the file; ids are content-derived."""

import pytest

from mismatch.config import SpecError, TrialSpec, load_trial_spec, load_trial_spec_file


def _spec(**overrides):
    data = {"data": {"synthetic": {"kind": "vessels"}}, "method": {"name": "mismatch"}}
    data.update(overrides)
    return data


def test_defaults_follow_the_paper():
    spec = load_trial_spec(_spec())
    assert spec.method.alpha == 0.002
    assert spec.method.model == "mm"
    assert (spec.train.lr, spec.train.batch_size, spec.train.optimizer) == (2e-5, 1, "adam")
    assert (spec.train.snapshot, spec.train.snapshot_k) == ("last-k", 10)
    assert spec.train.effective_weight_decay() == 0.0
    adamw = load_trial_spec(_spec(train={"optimizer": "adamw"}))
    assert adamw.train.effective_weight_decay() == 1e-5


def test_typo_in_a_section_names_the_key_and_suggests(tmp_path):
    path = tmp_path / "trial.yaml"
    path.write_text("data: {synthetic: {kind: vessels}}\nmethod: {name: mismatch}\ntrain: {epoch: 3}\n")
    with pytest.raises(SpecError) as err:
        load_trial_spec_file(path)
    message = str(err.value)
    assert "train.epoch" in message and str(path) in message and "did you mean 'epochs'" in message


def test_typo_in_method_settings_names_the_key():
    with pytest.raises(SpecError, match=r"method\.alhpa: unknown key \(did you mean 'alpha'"):
        load_trial_spec(_spec(method={"name": "mismatch", "alhpa": 0.1}))


def test_unknown_method_lists_registered_ones():
    with pytest.raises(SpecError, match="unknown method 'mismatchh'.*mismatch"):
        load_trial_spec(_spec(method={"name": "mismatchh"}))


def test_wrong_type_and_value_are_errors():
    with pytest.raises(SpecError, match="train.epochs"):
        load_trial_spec(_spec(train={"epochs": "many"}))
    with pytest.raises(SpecError, match="method.model"):
        load_trial_spec(_spec(method={"name": "mismatch", "model": "mm-z"}))
    with pytest.raises(SpecError, match="exactly one of 'root' and 'synthetic'"):
        load_trial_spec(_spec(data={"root": "/x", "synthetic": {"kind": "vessels"}}))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_trial_spec_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml"):
        load_trial_spec_file(bad)


def test_trial_id_is_content_derived_and_round_trips():
    a = load_trial_spec(_spec())
    b = load_trial_spec(_spec(train={"device": "cpu"}, study="other"))
    c = load_trial_spec(_spec(method={"name": "mismatch", "alpha": 0.004}))
    assert a.trial_id() == b.trial_id() != c.trial_id()
    assert a.trial_id().startswith("mismatch-")
    again = TrialSpec.model_validate_json(a.model_dump_json())
    assert again == a and again.method.alpha == 0.002


def test_the_one_dotted_setter_creates_sections_and_names_a_path_through_a_value():
    from mismatch.config import SpecError, set_dotted
    from mismatch.search_space import overrides_of

    tree: dict = {"train": {"epochs": 3}}
    set_dotted(tree, "train.schedule.name", "poly")
    set_dotted(tree, "method.alpha", 0.01)
    assert tree == {"train": {"epochs": 3, "schedule": {"name": "poly"}}, "method": {"alpha": 0.01}}
    with pytest.raises(SpecError, match=r"^train\.epochs\.max: 'epochs' is not a section$"):
        set_dotted(tree, "train.epochs.max", 1)
    assert overrides_of({"train.lr": 1e-3, "alpha": 0.01}) == {"train": {"lr": 1e-3}, "method": {"alpha": 0.01}}
