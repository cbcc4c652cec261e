"""The driver's data check before Ray starts (issue 25, item 5): a study whose trials cannot run
on their data stops with every problem in one message, exit 2, nothing started, nothing stored.

Before it, `mismatch study run studies/la_ssl.yaml --profile smoke` without the phantom started
the embedded Ray and all 8 trials, each stored as failed with the same DataError (15 s)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml

from mismatch.cli import main
from mismatch.config import DataSpec
from mismatch.data.cache import prepare_dataset
from mismatch.data.splits import trial_splits
from mismatch.data.synth import write_synthetic_dataset
from mismatch.data.trial_data import open_source
from mismatch.study.preflight import PlanDataError, check_plan_data, plan_data_problems
from mismatch.study.store import trial_statuses
from mismatch.study.trials import load_study


def _study(root: str, **extra) -> dict:
    return {
        "name": "pre",
        "base": {
            "data": {"root": root, "preset": "la2018", "patch_size": [16, 32, 32]},
            "protocol": {"preset": "la-8", "validation_cases": 1},
            "train": {"epochs": 1, "batch_size": 1, "stream": "two-stream", "snapshot": "final"},
        },
        "methods": [{"name": "sup1", "width": 4}, {"name": "mismatch", "model": "mm3d", "width": 4}],
        "grid": {"labelled_cases": [1, 2], "seed": [0]},
        "resources": {"cpu": 1, "gpu": 0},
        **extra,
    }


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def la_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("la") / "la", "la2018-h5", 5, size=(32, 32), slices=16)


def test_a_missing_root_stops_the_study_before_ray_with_one_message_and_exit_2(tmp_path, capsys):
    study_file = _write(tmp_path / "s.yaml", _study(str(tmp_path / "absent")))
    storage = tmp_path / "runs"
    start = time.perf_counter()
    code = main(["study", "run", str(study_file), "--storage", str(storage), "--tracking", "none"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2
    assert elapsed < 5, elapsed  # no embedded Ray: it takes seconds to start
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert err.count("error:") == 1 and err.count("dataset root not found") == 1, err  # 4 trials, one line
    assert f"{study_file}:" in err and "base.data.root: dataset root not found" in err and "(4 trials)" in err
    assert "nothing was started" in err
    assert trial_statuses(str(storage), "pre") == {}  # nothing stored
    assert not (storage / "pre").exists()  # not even the study's folder, which the driver lock made


def test_every_split_problem_is_listed_once_with_the_trials_it_stops(tmp_path, la_root):
    """The phantom's train.list holds 3 volumes (5 cases: 1 in test.list, 1 validation):
    labelled_cases 9 cannot be split; 1 and 2 can."""
    study = load_study(_write(tmp_path / "s.yaml", _study(str(la_root), grid={"labelled_cases": [1, 9, 2],
                                                                             "seed": [0, 1]})), None, str(tmp_path))
    specs = study.trials()
    problems = plan_data_problems(specs)
    assert len(problems) == 1, problems
    key, message, count = problems[0]
    assert key == ("base", "protocol") and count == 4  # 2 methods x 2 seeds at labelled_cases 9
    assert "9 labelled" in message
    with pytest.raises(PlanDataError) as raised:
        check_plan_data(study, specs)
    assert str(raised.value).count("\n") == 1 and "4 of the 12 trials" in str(raised.value)
    check_plan_data(study, [s for s in specs if s.protocol.labelled_cases != 9])  # the rest can run


def test_problems_of_several_datasets_are_collected_in_one_message(tmp_path, la_root):
    data = _study(str(tmp_path / "absent"))
    data["methods"] = [{"name": "sup1", "width": 4}]
    study = load_study(_write(tmp_path / "s.yaml", data), None, str(tmp_path))
    good = load_study(_write(tmp_path / "g.yaml", {**_study(str(la_root)), "grid": {"labelled_cases": [9]}}),
                      None, str(tmp_path))
    specs = study.trials() + good.trials()
    with pytest.raises(PlanDataError) as raised:
        check_plan_data(study, specs)
    lines = str(raised.value).splitlines()
    assert len(lines) == 3 and "dataset root not found" in lines[1] and "labelled" in lines[2], lines


# -- slice counts and a pinned fingerprint (read on the driver, as a worker would) ----------------

def _vessel_study(root: str, data: dict | None = None, grid: dict | None = None) -> dict:
    return {
        "name": "pre2d",
        "base": {
            "data": data or {"root": root, "layout": "msd"},
            "protocol": {"labelled_cases": 1, "unlabelled_cases": 2, "validation_cases": 1, "test_cases": 1},
            "train": {"epochs": 1, "batch_size": 1, "stream": "two-stream"},
        },
        "methods": [{"name": "sup1", "width": 4}],
        "grid": grid or {"labelled_slices": [2], "fold": [0], "seed": [0]},
        "resources": {"cpu": 1, "gpu": 0},
    }


@pytest.fixture(scope="module")
def vessel_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("v") / "v", "vessels", 5, size=(16, 16), slices=6)


def _qualifying_in_labelled_case(spec) -> int:
    source = open_source(spec.data)
    (case,) = trial_splits(source.cases, spec.protocol, None)["labelled"]
    return len(source.qualifying([case])[0][case])


def test_more_labelled_slices_than_the_labelled_case_holds_is_found_before_ray(tmp_path, vessel_root):
    probe = load_study(_write(tmp_path / "p.yaml", _vessel_study(str(vessel_root))), None, str(tmp_path))
    have = _qualifying_in_labelled_case(probe.trials()[0])  # the number the worker's selection would count
    grid = {"labelled_slices": [have, have + 1], "fold": [0], "seed": [0, 1]}
    study = load_study(_write(tmp_path / "s.yaml", _vessel_study(str(vessel_root), grid=grid)), None, str(tmp_path))
    problems = plan_data_problems(study.trials())
    assert len(problems) == 1, problems
    key, message, count = problems[0]
    assert key == ("base", "protocol") and count == 2  # 2 seeds at have + 1; `have` itself fits
    assert f"{have + 1} labelled slices asked" in message and f"only {have} qualifying" in message


def test_a_pinned_fingerprint_that_differs_from_the_raw_data_is_found_before_ray(tmp_path, vessel_root):
    data = {"root": str(vessel_root), "layout": "msd", "fingerprint": "0" * 64}
    study = load_study(_write(tmp_path / "s.yaml", _vessel_study(str(vessel_root), data=data)), None, str(tmp_path))
    problems = plan_data_problems(study.trials())
    assert [(k, n) for k, _, n in problems] == [(("base", "data", "root"), 1)], problems
    assert "but the spec pins " + "0" * 64 in problems[0][1]
    right = {**data, "fingerprint": open_source(load_study(_write(tmp_path / "r.yaml", _vessel_study(
        str(vessel_root))), None, str(tmp_path)).trials()[0].data).fingerprint}
    fine = load_study(_write(tmp_path / "f.yaml", _vessel_study(str(vessel_root), data=right)), None, str(tmp_path))
    assert plan_data_problems(fine.trials()) == []


def test_an_unlabelled_slice_cap_a_prepared_cache_cannot_fill_is_found_from_its_manifest(tmp_path, vessel_root):

    prepared = prepare_dataset(DataSpec(root=str(vessel_root), layout="msd"), tmp_path / "prep").path
    data = {"prepared": str(prepared), "layout": "msd"}
    body = _vessel_study(str(vessel_root), data=data)
    body["methods"] = [{"name": "mismatch", "width": 4}]  # a supervised trial drops unlabelled_slices
    body["base"]["protocol"]["unlabelled_slices"] = 10_000  # 2 cases of 6 slices
    study = load_study(_write(tmp_path / "s.yaml", body), None, str(tmp_path))
    problems = plan_data_problems(study.trials())
    assert len(problems) == 1 and "10000 unlabelled slices asked" in problems[0][1], problems
    body["base"]["protocol"]["unlabelled_slices"] = 1
    ok = load_study(_write(tmp_path / "o.yaml", body), None, str(tmp_path))
    assert plan_data_problems(ok.trials()) == []
