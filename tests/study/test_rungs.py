"""Multi-fidelity candidates: rung epochs, grace per method, pruning, pausing and resuming.

The candidate loop runs here without Ray, against a real Optuna study with its pruner; the
real-Ray search is in test_search_e2e.py.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from mismatch.config import load_trial_spec
from mismatch.study.rung_search import train_candidate
from mismatch.study.rungs import CandidateRuns, Rungs, RunProgress, method_grace, rung_epochs
from mismatch.study.search import Candidate
from mismatch.study.store import TrialCheckpoint
from mismatch.study.study_file import SearchSpec
from mismatch.study.trials import load_study
from mismatch.trial.run import run_trial


def test_rung_epochs_are_grace_times_powers_of_the_factor_below_the_budget():
    assert rung_epochs(1, 3, 50) == [1, 3, 9, 27]
    assert rung_epochs(2, 2, 8) == [2, 4]
    assert rung_epochs(4, 3, 4) == []  # a grace at the budget leaves no rung: never pruned


def test_grace_is_raised_to_a_methods_consistency_ramp_up(tiny_dict):
    search = SearchSpec(grace_epochs=1)
    mt = load_trial_spec(tiny_dict(method={"name": "mean-teacher", "width": 4}, train={"epochs": 20}))
    assert method_grace(search, "mean-teacher", mt) == 10  # Tarvainen and Valpola's ramp: 10 epochs here
    cps = load_trial_spec(tiny_dict(method={"name": "cps", "width": 4}, train={"epochs": 20}))
    assert method_grace(search, "cps", cps) == 20  # a ramp over the whole run: no rung below the budget
    mm = load_trial_spec(tiny_dict(train={"epochs": 20}))
    assert method_grace(search, "mismatch", mm) == 1
    named = SearchSpec(grace_epochs={"default": 2, "cps": 5})
    assert method_grace(named, "cps", cps) == 5 and method_grace(named, "mismatch", mm) == 2


def _study(tmp_path: Path, folds: list[int], epochs: int = 4):
    raw = {
        "name": "rungs",
        "base": {"data": {"synthetic": {"kind": "vessels", "cases": 7, "size": [32, 32], "slices": 8}},
                 "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2},
                 "train": {"epochs": epochs, "snapshot_k": 1, "prediction_maps": 0, "device": "cpu"}},
        "methods": [{"name": "sup1", "width": 4}],
        "grid": {"labelled_slices": [2], "seed": [0]},
        "search": {"params": ["train.lr"], "folds": folds, "scheduler": "asha", "grace_epochs": 1,
                   "reduction_factor": 2},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    study = load_study(tmp_path / "s.yaml", storage=str(tmp_path / "runs"))
    method = {"name": "sup1", "width": 4}
    return study, Candidate(study, ("train.lr",), tuple(folds), method)


LR = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)


def _rungs(study, storage: str, epochs: int = 4) -> Rungs:
    return Rungs("asha", 1, 2, epochs, "rungs.sup1", study.file.search, storage, study.name)


def _optuna_with_rivals(value: float, rungs: Rungs) -> optuna.Study:
    """A study holding two finished rivals that scored ``value`` at every rung."""
    ot = optuna.create_study(direction="maximize", pruner=rungs.pruner())
    for _ in range(2):  # through the pruner, which marks the rungs they completed
        rival = ot.ask({"train__lr": LR})
        for epoch in rungs.epochs_list:
            rival.report(value, epoch)
            assert not rival.should_prune()
        ot.tell(rival, value)
    return ot


def _candidate(candidate: Candidate, ot: optuna.Study, rungs: Rungs, lr: float, reports: list) -> CandidateRuns:
    trial = ot.ask({"train__lr": LR})
    specs = [candidate.spec({"train.lr": lr}, fold) for fold, _ in candidate.runs]
    return CandidateRuns([RunProgress(s) for s in specs], rungs, trial, reports.append)


def test_a_candidate_below_its_rivals_at_the_first_rung_is_pruned_and_stored_as_pruned(tmp_path):
    study, candidate = _study(tmp_path, folds=[0, 1])
    storage = str(tmp_path / "runs")
    rungs = _rungs(study, storage)
    ot = _optuna_with_rivals(0.999, rungs)
    reports: list = []
    runs = _candidate(candidate, ot, rungs, 1e-2, reports)
    train_candidate(runs, storage)

    assert reports[-1]["pruned"] == 1 and "val_iou" not in reports[-1]
    assert [r["rung"] for r in reports] == [1, 1]  # the rung report, then the end
    trial = ot.trials[-1]
    assert trial.intermediate_values == {1: pytest.approx(reports[0]["rung_val_iou"])}
    assert trial.user_attrs["trial_epochs"] == 2  # 2 runs x 1 epoch
    rows = pd.read_parquet(tmp_path / "runs" / "rungs" / "trials")
    assert sorted(rows["status"]) == ["pruned", "pruned"] and (rows["epochs"] == 1).all()
    assert (rows["train_time_s"] > 0).all() and rows["error"].str.startswith("pruned at epoch 1").all()
    assert not (tmp_path / "runs" / "rungs" / "images").exists()  # no test row of a pruned run
    assert not any(TrialCheckpoint(storage, "rungs", r.spec.trial_id()).exists() for r in runs.runs)


def test_a_promoted_candidate_pauses_its_runs_at_rungs_and_equals_them_trained_straight(tmp_path):
    study, candidate = _study(tmp_path, folds=[0, 1])
    storage = str(tmp_path / "runs")
    rungs = _rungs(study, storage)
    ot = _optuna_with_rivals(0.0, rungs)  # rivals at 0: every rung promotes
    reports: list = []
    runs = _candidate(candidate, ot, rungs, 1e-2, reports)
    train_candidate(runs, storage)

    assert [r.get("rung") for r in reports[:-1]] == [1, 2] and "val_iou" in reports[-1]
    trials = pd.read_parquet(tmp_path / "runs" / "rungs" / "trials").set_index("fold")
    assert list(trials["status"]) == ["completed", "completed"] and (trials["epochs"] == 4).all()
    # fold 0 waits at rung 1; fold 1 reaches it, decides, goes on and waits at rung 2; fold 0
    # resumes at 1, decides rung 2 and finishes; fold 1 resumes at 2 and finishes
    assert trials.loc[0, "resumed_from_epoch"] == 1 and trials.loc[1, "resumed_from_epoch"] == 2
    epochs = pd.read_parquet(tmp_path / "runs" / "rungs" / "epochs")
    assert epochs.groupby("trial_id")["epoch"].apply(sorted).map(list).tolist() == [[0, 1, 2, 3]] * 2
    # paused and resumed on checkpoints, a run gives the rows of the same run trained straight
    images = pd.read_parquet(tmp_path / "runs" / "rungs" / "images")
    for run in runs.runs:
        straight = run_trial(run.spec).images["iou"].to_numpy()
        stored = images[images["trial_id"] == run.spec.trial_id()]["iou"].to_numpy()
        assert stored == pytest.approx(straight, abs=1e-6)
    # the score is the mean over the runs of their last validation IoU (snapshot_k 1)
    assert reports[-1]["val_iou"] == pytest.approx(trials["final_val_iou"].mean())
    assert ot.trials[-1].intermediate_values.keys() == {1, 2}


class Killed(Exception):
    """The driver dies: raised from the candidate's report after its first rung."""


def test_a_killed_candidate_resumes_without_training_its_finished_rung_again(tmp_path):
    study, candidate = _study(tmp_path, folds=[0, 1])
    storage = str(tmp_path / "runs")
    rungs = _rungs(study, storage)
    ot = _optuna_with_rivals(0.0, rungs)
    trial = ot.ask({"train__lr": LR})
    specs = [candidate.spec({"train.lr": 1e-2}, fold) for fold, _ in candidate.runs]

    def die(report: dict) -> None:
        if report.get("rung") == 1:
            raise Killed

    with pytest.raises(Killed):
        train_candidate(CandidateRuns([RunProgress(s) for s in specs], rungs, trial, die), storage)
    reports: list = []
    again = CandidateRuns([RunProgress(s) for s in specs], rungs, trial, reports.append)
    train_candidate(again, storage)

    trials = pd.read_parquet(tmp_path / "runs" / "rungs" / "trials")
    assert (trials["status"] == "completed").all() and (trials["resumed_from_epoch"] >= 1).all()
    assert ot.trials[-1].intermediate_values.keys() == {1, 2}  # rung 1 reported once, before the kill
    assert again.epochs == 8 and reports[-1]["trial_epochs"] == 8
