"""Study-file errors name the key's path in the file and its line (issue 12, item 16)."""

from __future__ import annotations

import re

import pytest

from mismatch.config import SpecError, parse_yaml_lines
from mismatch.study.trials import load_study

STUDY = """\
name: lines
base:
  data:
    synthetic: {kind: vessels, cases: 6, size: [32, 32], slices: 10}
  protocol: {unlabelled_cases: 2, validation_cases: 1, test_cases: 2}
  train:
    epochs: 1
methods:
  - {name: mismatch, model: mm}
  - name: sup1
    width: 8
grid:
  labelled_slices: [2]
  fold: [0]
profiles:
  smoke:
    base:
      train:
        lr: 0.01
    methods:
      - name: sup1
        width: 8
"""


def _error(tmp_path, text: str, profile: str | None = None) -> tuple[str, str]:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_study(path, profile=profile, storage=str(tmp_path / "runs"))
    return str(err.value), str(path)


def test_the_study_without_typos_loads(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    assert len(load_study(path, profile="smoke").trials()) == 1


def test_a_typo_deep_in_a_profile_names_the_profile_key_and_its_line(tmp_path):
    message, path = _error(tmp_path, STUDY.replace("        width: 8\n", "        width: 8\n        modle: mm\n"),
                           profile="smoke")
    assert f"{path}:23: profiles.smoke.methods[0].modle: unknown key" in message


def test_a_bad_value_in_a_profiles_base_names_its_line(tmp_path):
    message, path = _error(tmp_path, STUDY.replace("lr: 0.01", "lr: .inf"), profile="smoke")
    assert f"{path}:19: profiles.smoke.base.train.lr: Input should be a finite number" in message


def test_a_typo_in_base_names_base_and_its_line(tmp_path):
    message, path = _error(tmp_path, STUDY.replace("    epochs: 1\n", "    epochs: 1\n    epoch: 2\n"))
    assert f"{path}:8: base.train.epoch: unknown key (did you mean 'epochs'?)" in message


def test_a_base_typo_is_still_named_in_base_when_a_profile_overrides_its_neighbours(tmp_path):
    message, path = _error(tmp_path, STUDY.replace("    epochs: 1\n", "    epochs: 1\n    epoch: 2\n"), profile="smoke")
    assert f"{path}:8: base.train.epoch: unknown key" in message


def test_a_method_typo_names_its_entry_and_line(tmp_path):
    message, path = _error(tmp_path, STUDY.replace("    width: 8\n", "    width: 8\n    widht: 4\n", 1))
    assert f"{path}:12: methods[1].widht: unknown key (did you mean 'width'?)" in message


def test_a_bad_list_element_names_its_index_and_line(tmp_path):
    message, path = _error(tmp_path, STUDY.replace("{name: mismatch, model: mm}", "{name: mismatch, alpha: [0.1, -1]}"))
    assert f"{path}:9: methods[0].alpha[1]: Input should be greater than or equal to 0" in message


def test_a_grid_value_names_the_grid_key(tmp_path):
    message, path = _error(tmp_path, STUDY.replace("labelled_slices: [2]", "labelled_slices: [0]"))
    assert re.search(rf"{re.escape(path)}:13: grid\.labelled_slices: .*greater than", message), message


def test_study_file_keys_and_profile_keys_name_their_lines(tmp_path):
    message, path = _error(tmp_path, STUDY.replace("  fold: [0]\n", "  fold: [0]\n  folds: [1]\n"))
    assert f"{path}:15: grid.folds: unknown key (did you mean 'fold'?)" in message
    message, path = _error(tmp_path, STUDY.replace("    base:\n", "    gird: {}\n    base:\n"), profile="smoke")
    assert f"{path}:17: profiles.smoke.gird: unknown key" in message


def test_key_lines_map_keys_and_list_items():
    data, lines = parse_yaml_lines(STUDY)
    assert data["methods"][1]["width"] == 8
    assert lines[("name",)] == 1
    assert lines[("base", "train", "epochs")] == 7
    assert lines[("methods", 0)] == 9 and lines[("methods", 0, "model")] == 9
    assert lines[("methods", 1, "width")] == 11
    assert lines[("profiles", "smoke", "methods", 0, "width")] == 22


def test_key_lines_walk_an_aliased_node_once():
    # nine levels of aliases, each repeating the one before 9 times: 9**9 paths if walked naively
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
    _, lines = parse_yaml_lines(text)
    assert lines[("a8",)] == 9 and len(lines) < 200
