"""Faults from the fault-injection pass (issue 12 items 1, 3, 9, 10): each one a clear error
naming the key and the file, or a failed row, never a hang, a traceback or a lost trial."""

from __future__ import annotations

import copy
import sys
import time
import types

import pytest
import yaml

from mismatch import cli
from mismatch.config import SpecError, load_trial_spec, load_trial_spec_file, parse_yaml, read_yaml_mapping
from mismatch.results.schema import SCHEMA_VERSION
from mismatch.study import runner, worker
from mismatch.study.store import read_table, trial_statuses, write_trial
from mismatch.study.trials import load_study, trial_payload

STUDY = """\
name: hard
base:
  data: {synthetic: {kind: vessels, cases: 6, size: [32, 32], slices: 10}}
  protocol: {unlabelled_cases: 2, validation_cases: 1, test_cases: 2}
  train: {epochs: 1}
methods:
  - {name: mismatch, alpha: [0.001, 0.002]}
grid: {labelled_slices: [2], fold: [0]}
"""


def _write(tmp_path, text: str, name: str = "study.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# item 9: duplicate keys


def test_duplicate_top_level_key_names_key_file_and_line(tmp_path):
    path = _write(tmp_path, STUDY + "name: elsewhere\n")
    with pytest.raises(SpecError) as err:
        load_study(path)
    message = str(err.value)
    assert str(path) in message and "duplicate key 'name' on line 9 (first given on line 1)" in message


def test_duplicate_nested_key_is_an_error_too(tmp_path):
    path = _write(tmp_path, "a:\n  b: 1\n  c: 2\n  b: 3\n")
    with pytest.raises(SpecError, match=r"duplicate key 'b' on line 4 \(first given on line 2\)"):
        read_yaml_mapping(path, "study")
    with pytest.raises(yaml.YAMLError, match="duplicate key 'x'"):
        parse_yaml("{x: 1, x: 2}")  # flow mappings: both on one line


def test_yaml_without_duplicates_reads_as_safe_load():
    text = "a: {b: [1, 2.5, null]}\nbase: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n"
    assert parse_yaml(text) == yaml.safe_load(text)


def test_trial_spec_file_with_a_duplicate_key_is_rejected(tmp_path, tiny_dict):
    text = yaml.safe_dump(tiny_dict()) + "study: other\n"
    with pytest.raises(SpecError, match="duplicate key 'study'"):
        load_trial_spec_file(_write(tmp_path, text, "trial.yaml"))


# item 1: non-finite numbers


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_float_in_base_is_rejected_naming_the_key(tmp_path, value):
    path = _write(tmp_path, STUDY.replace("train: {epochs: 1}", f"train: {{epochs: 1, lr: {value}}}"))
    with pytest.raises(SpecError) as err:
        load_study(path)
    assert str(path) in str(err.value) and "train.lr: Input should be a finite number" in str(err.value)


def test_non_finite_float_in_a_method_list_is_rejected_naming_the_element(tmp_path):
    path = _write(tmp_path, STUDY.replace("alpha: [0.001, 0.002]", "alpha: [0.001, .nan]"))
    with pytest.raises(SpecError, match=r"methods\[0\]\.alpha\[1\]: Input should be a finite number"):
        load_study(path)


def test_non_finite_float_in_study_fields_is_rejected(tmp_path):
    path = _write(tmp_path, STUDY + "resources: {cpu: .inf}\n")
    with pytest.raises(SpecError, match="resources.cpu: Input should be a finite number"):
        load_study(path)


def _fake_tune(monkeypatch) -> list[dict]:
    reports: list[dict] = []
    monkeypatch.setitem(sys.modules, "ray.tune", types.SimpleNamespace(report=reports.append))
    monkeypatch.setattr(sys.modules["ray"], "tune", sys.modules["ray.tune"], raising=False)
    return reports


def _broken_config(tiny_dict) -> tuple[dict, str]:
    """A study trial's Tune config whose spec no longer validates (``lr: .inf`` became null)."""
    spec = load_trial_spec(tiny_dict())
    payload = trial_payload(spec)
    payload["train"]["lr"] = None
    return {"trial": {"id": spec.trial_id(), "spec": payload}}, spec.trial_id()


def test_worker_records_a_spec_that_fails_validation_as_failed(tmp_path, monkeypatch, tiny_dict):
    pytest.importorskip("ray")
    reports = _fake_tune(monkeypatch)
    monkeypatch.setattr("mismatch.runtime.set_threads", lambda n: None)  # keep this process's threads
    config, trial_id = _broken_config(tiny_dict)
    storage = str(tmp_path / "runs")
    worker.trial_fn(config, storage=storage, threads=1)
    assert reports == [{"status_failed": 1, "error": reports[0]["error"]}]
    assert "SpecError" in reports[0]["error"] and "train.lr" in reports[0]["error"]
    assert trial_statuses(storage, "tiny") == {trial_id: "failed"}
    row = read_table(storage, "tiny", "trials").iloc[0]
    assert row["method"] == "mismatch" and "train.lr" in row["error"] and f"trial {trial_id}" in row["error"]
    assert row["schema_version"] == SCHEMA_VERSION and row["study"] == "tiny"


def test_driver_records_an_errored_trial_whose_spec_does_not_validate(tmp_path, tiny_dict):
    config, trial_id = _broken_config(tiny_dict)
    storage = str(tmp_path / "runs")
    grid = [types.SimpleNamespace(error=RuntimeError("worker died"), config=copy.deepcopy(config))]
    runner._record_errored(grid, storage)  # must not raise
    assert trial_statuses(storage, "tiny") == {trial_id: "failed"}


# item 3: validate before expanding, cap the expansion, deep nesting


def test_nine_list_valued_keys_fail_fast_with_the_cap(tmp_path):
    values = lambda xs: "[" + ", ".join(str(x) for x in xs) + "]"  # noqa: E731
    entry = {
        "width": values(range(8, 28, 2)), "alpha": values([i / 10 for i in range(1, 11)]),
        "threshold": values([0.5 + i / 20 for i in range(10)]), "noise_std": values([i / 10 for i in range(10)]),
        "ra_n_ops": values(range(1, 11)), "ra_max_magnitude": values([i / 10 for i in range(1, 11)]),
    }
    ops = "ra_ops: [[identity], [noise], [hflip], [vflip], [rot90], [gamma], [solarize], [equalize], [rotate], [contrast]]"
    extra = "model: [a, b, c, d, e, f, g, h, i, j], rampup_epochs: " + values(range(10))  # not fixmatch's: the cap comes first
    method = "{name: fixmatch, " + ", ".join(f"{k}: {v}" for k, v in entry.items()) + f", {ops}, {extra}}}"
    text = STUDY.replace("{name: mismatch, alpha: [0.001, 0.002]}", method)
    text = text.replace("grid: {labelled_slices: [2], fold: [0]}", "grid: {labelled_slices: [2, 3], seed: [0, 1]}")
    path = _write(tmp_path, text)
    assert path.stat().st_size < 1000
    start = time.perf_counter()
    with pytest.raises(SpecError) as err:
        load_study(path)
    assert time.perf_counter() - start < 2
    message = str(err.value)
    assert str(path) in message and "expands to 4,000,000,000 trials, more than max_trials: 10,000" in message
    assert "methods[0].width (10 values)" in message


def test_max_trials_is_configurable(tmp_path):
    path = _write(tmp_path, STUDY + "max_trials: 1\n")
    with pytest.raises(SpecError, match="expands to 2 trials, more than max_trials: 1 "):
        load_study(path)
    assert len(load_study(_write(tmp_path, STUDY + "max_trials: 2\n", "two.yaml")).trials()) == 2


def test_list_valued_keys_are_checked_before_expansion(tmp_path):
    bad_key = STUDY.replace("alpha: [0.001, 0.002]", "alpha: [0.001, 0.002], modle: [mm, mm-a]")
    with pytest.raises(SpecError, match=r"methods\[0\]\.modle: unknown key \(did you mean 'model'\?\)"):
        load_study(_write(tmp_path, bad_key))
    bad_value = STUDY.replace("alpha: [0.001, 0.002]", "alpha: [0.001, -2]")
    with pytest.raises(SpecError, match=r"methods\[0\]\.alpha\[1\]: Input should be greater than or equal to 0"):
        load_study(_write(tmp_path, bad_value, "neg.yaml"))


def test_deep_nesting_is_a_one_line_error_naming_the_file(tmp_path):
    path = _write(tmp_path, "name: deep\nmethods: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError) as err:
        load_study(path)
    assert str(err.value) == f"{path}: the YAML is nested too deeply to read (a study needs only a few levels)"


# item 10: a rerun that only skips trials failed for good


def test_rerun_with_only_failed_trials_exits_1_and_says_how_to_retry(tmp_path, capsys):
    path = _write(tmp_path, STUDY)
    storage = str(tmp_path / "runs")
    study = load_study(path, storage=storage)
    for spec in study.trials():
        write_trial(storage, "hard", spec.trial_id(), {"trial_id": spec.trial_id(), "status": "failed",
                                                        "method": "mismatch", "error": "DataError: boom"})
    code = cli.main(["study", "run", str(path), "--storage", storage])
    out = capsys.readouterr().out
    assert code == 1
    assert "2 trial(s) failed for good in an earlier run and are skipped" in out and "--retry-failed" in out


def test_rerun_with_every_trial_completed_exits_0(tmp_path, capsys):
    path = _write(tmp_path, STUDY)
    storage = str(tmp_path / "runs")
    for spec in load_study(path, storage=storage).trials():
        write_trial(storage, "hard", spec.trial_id(), {"trial_id": spec.trial_id(), "status": "completed"})
    assert cli.main(["study", "run", str(path), "--storage", storage]) == 0
    assert "--retry-failed" not in capsys.readouterr().out


def test_train_cli_rejects_a_duplicate_key_in_its_spec_file(tmp_path, tiny_dict, capsys):
    path = _write(tmp_path, yaml.safe_dump(tiny_dict()) + "study: other\n", "trial.yaml")
    assert cli.main(["train", str(path), "--dry-run"]) == 2
    assert "duplicate key 'study'" in capsys.readouterr().err
    assert cli.main(["train", str(_write(tmp_path, yaml.safe_dump(tiny_dict()), "ok.yaml")), "--dry-run"]) == 0
