"""Study files: expansion, profiles, fold 'all', strict validation naming key and file."""

import pytest
import yaml

from mismatch.config import SpecError
from mismatch.study.trials import load_study

BASE = {
    "name": "s1",
    "base": {
        "data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10}},
        "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2},
        "train": {"epochs": 1},
    },
    "methods": [{"name": "mismatch", "model": ["mm", "mm-a"], "alpha": [0.001, 0.002]}, {"name": "sup1"}],
    "grid": {"labelled_slices": [2, 3], "fold": "all", "seed": [0]},
    "profiles": {"smoke": {"name": "s1-smoke", "grid": {"fold": [0]}, "base": {"train": {"epochs": 2}}}},
}


def _write(tmp_path, data, name="study.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_grid_expands_method_variants_axes_and_all_folds(tmp_path):
    study = load_study(_write(tmp_path, BASE))
    trials = study.trials()
    # (2 models x 2 alphas + sup1) x 2 labelled counts x 6 folds (6 cases, 1 labelled each)
    assert len(trials) == 5 * 2 * 6
    assert len({t.trial_id() for t in trials}) == len(trials)
    assert {t.protocol.fold for t in trials} == set(range(6))
    assert {(t.method.name, getattr(t.method, "model", None)) for t in trials} >= {("mismatch", "mm-a"), ("sup1", None)}
    assert all(t.study == "s1" and t.train.epochs == 1 for t in trials)
    # ids are content-derived: loading again gives the same ids
    assert [t.trial_id() for t in load_study(_write(tmp_path, BASE, "again.yaml")).trials()] == [t.trial_id() for t in trials]


def test_profile_overrides_parts_of_the_file(tmp_path):
    study = load_study(_write(tmp_path, BASE), profile="smoke")
    trials = study.trials()
    assert study.name == "s1-smoke"
    assert len(trials) == 5 * 2 and {t.protocol.fold for t in trials} == {0}
    assert all(t.train.epochs == 2 and t.data.synthetic.cases == 6 for t in trials)
    with pytest.raises(SpecError, match="unknown profile 'smok'.*smoke"):
        load_study(_write(tmp_path, BASE), profile="smok")


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda d: d.update(gird={"fold": [0]}), "gird: unknown key (did you mean 'grid'?)"),
        (lambda d: d["grid"].update(folds=[0]), "grid.folds: unknown key (did you mean 'fold'?)"),
        (lambda d: d.update(resources={"gpus": 1}), "resources.gpus: unknown key (did you mean 'gpu'?)"),
        (lambda d: d["base"]["train"].update(epohcs=3), "train.epohcs: unknown key (did you mean 'epochs'?)"),
        (lambda d: d["methods"][1].update(alpah=1), "methods[1].alpah: unknown key"),
        (lambda d: d["profiles"]["smoke"].update(gird={}), "profiles.smoke.gird: unknown key"),
    ],
)
def test_typos_name_the_key_and_the_file(tmp_path, mutate, key):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    mutate(data)
    path = _write(tmp_path, data, "typo.yaml")
    with pytest.raises(SpecError) as err:
        load_study(path, profile="smoke" if "profiles" in key else None)
    assert key in str(err.value) and "typo.yaml" in str(err.value)


def test_missing_dataset_is_a_clear_error(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["base"]["data"] = {"root": str(tmp_path / "nowhere")}
    from mismatch.data import DataError

    with pytest.raises(DataError, match="nowhere"):
        load_study(_write(tmp_path, data))


def test_shipped_study_files_load_with_every_profile():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[2].glob("studies/*.yaml")):
        raw = yaml.safe_load(path.read_text())
        assert "smoke" in raw.get("profiles", {}), f"{path.name} has no smoke profile"
        study = load_study(path, profile="smoke")
        assert study.trials(), path.name


def test_best_of_a_search_is_read_from_its_best_json(tmp_path):
    import json

    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["methods"] = [{"name": "mismatch", "alpha": {"best_of": "my_search"}}]
    path = _write(tmp_path, data)
    with pytest.raises(SpecError, match="mismatch search alpha"):
        load_study(path, storage=str(tmp_path / "store"))
    (tmp_path / "store" / "my_search").mkdir(parents=True)
    (tmp_path / "store" / "my_search" / "best.json").write_text(json.dumps({"param": "alpha", "value": 0.0031}))
    trials = load_study(path, storage=str(tmp_path / "store")).trials()
    assert {t.method.alpha for t in trials} == {0.0031}


def test_status_of_a_study_whose_trials_all_failed(tmp_path):
    from mismatch.study.status import study_status
    from mismatch.study.store import write_trial

    study = load_study(_write(tmp_path, BASE), profile="smoke", storage=str(tmp_path / "store"))
    trials = study.trials()
    for spec in trials[:3]:
        write_trial(study.storage, study.name, spec.trial_id(), {"trial_id": spec.trial_id(), "status": "failed",
                                                                   "error": "DataError: bad"})
    st = study_status(study, study.storage)
    assert (st.done, st.failed, st.pending) == (0, 3, len(trials) - 3)
    assert st.eta_s is None and st.failures[0][1] == "DataError: bad"


def test_a_search_candidate_is_the_study_trial_with_the_setting_overridden(tmp_path):
    from mismatch.study.search import Candidate

    study = load_study(_write(tmp_path, BASE))
    by_id = {t.trial_id(): t for t in study.trials()}
    candidate = Candidate(study, "alpha", (0, 3))
    # at a grid value, the candidate IS the study's trial: first variant, first grid point, its fold
    same = candidate.spec(0.001, 3)
    assert same.trial_id() in by_id
    assert (same.method.model, same.protocol.labelled_slices, same.protocol.fold) == ("mm", 2, 3)
    other = candidate({"alpha": 0.0042, "__trial_index__": 1})
    assert other.trial_id() not in by_id and other.method.alpha == 0.0042
    assert other.model_copy(update={"method": same.method}).trial_id() == same.trial_id()


def test_relative_dataset_paths_are_resolved_where_the_study_was_loaded(tmp_path, monkeypatch):
    from mismatch.study.search import Candidate

    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["base"]["data"] = {"prepared": "caches/prep"}
    data["grid"]["fold"] = [0]
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    study = load_study(_write(tmp_path, data))
    monkeypatch.chdir(tmp_path)  # a Tune worker builds specs in its own folder
    expected = str(tmp_path / "here" / "caches" / "prep")
    assert {t.data.prepared for t in study.trials()} == {expected}
    assert Candidate(study, "alpha", (0,)).spec(0.003, 0).data.prepared == expected
