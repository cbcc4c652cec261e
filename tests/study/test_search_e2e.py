"""The Optuna alpha search on a real local Ray: paper value first, K folds, resume, best.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend

from mismatch.data import prepare_dataset, write_synthetic_dataset
from mismatch.data.presets import data_spec_for

# Real Ray clusters: minutes on 2 cores. CI runs them (`python -m pytest`); the developer loop
# (`python -m pytest -m "not slow"`) leaves them out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]


def _smoke_file(tmp_path: Path, epochs: int) -> Path:
    raw = yaml.safe_load((ROOT / "studies" / "alpha_search.yaml").read_text())
    raw["profiles"]["smoke"]["base"]["train"]["epochs"] = epochs
    raw["profiles"]["smoke"]["base"]["train"]["snapshot_k"] = 1
    path = tmp_path / "alpha_search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cmd(study: Path, storage: Path) -> list[str]:
    return [sys.executable, "-m", "mismatch", "search", "alpha", str(study), "--profile", "smoke",
            "--storage", str(storage)]


def test_search_survives_a_kill_and_writes_the_best_alpha(tmp_path):
    storage = tmp_path / "results"
    study = _smoke_file(tmp_path, epochs=2)  # 6 trials on 2 slots: the kill still lands mid-search
    trials_dir = storage / "alpha_search-smoke" / "trials"
    driver = subprocess.Popen(_cmd(study, storage), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (trials_dir.exists() and any(trials_dir.iterdir())):
            time.sleep(0.5)
        assert trials_dir.exists(), "no candidate finished before the kill"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)

    rerun = subprocess.run(_cmd(study, storage), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming the interrupted search" in rerun.stdout

    best = json.loads((storage / "alpha_search-smoke" / "best.json").read_text())
    journal = storage / "alpha_search-smoke" / "optuna" / "journal.log"
    ot = optuna.load_study(study_name="alpha_search-smoke",
                           storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    complete = [t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete[0].params["alpha"] == 0.002  # the paper's value is evaluated first
    assert len({t.params["alpha"] for t in complete}) == 3
    assert best["value"] == max(complete, key=lambda t: t.value).params["alpha"]

    rows = pd.read_parquet(storage / "alpha_search-smoke" / "trials")
    done = rows[rows["status"] == "completed"]
    assert done["trial_id"].is_unique
    # every completed candidate was scored on both folds, by validation IoU only
    for trial in complete:
        folds = done.loc[(done["alpha"] - trial.params["alpha"]).abs() < 1e-12, "fold"]
        assert sorted(folds) == [0, 1]
        mean_val = done.loc[(done["alpha"] - trial.params["alpha"]).abs() < 1e-12, "final_val_iou"].mean()
        assert abs(mean_val - trial.value) < 1e-9


def test_search_of_a_baseline_setting_on_a_held_out_tuning_split(tmp_path):
    """`mismatch search FILE`: Mean Teacher's consistency weight, scored on the set-aside case
    only, on fold 1 of a prepared cache named relatively (Tune runs each candidate in its own
    folder: ``prepared: prep`` means prep where the search started)."""
    from mismatch.config import ProtocolSpec
    from mismatch.data.splits import held_out_cases, make_all_splits
    from mismatch.study.trials import load_study

    raw = write_synthetic_dataset(tmp_path / "raw", "vessels", 7, (32, 32), 8, seed=0)
    prepared = prepare_dataset(data_spec_for("msd", raw, "msd", {"min_foreground": 5}), tmp_path / "prep")
    protocol = {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2, "tuning_cases": 1}
    study = {
        "name": "mt-search",
        "base": {"data": {**prepared.study_data, "prepared": "prep"},
                 "protocol": protocol, "train": {"epochs": 1, "snapshot_k": 1, "prediction_maps": 0}},
        "methods": [{"name": "mean-teacher", "width": 4}],
        "grid": {"labelled_slices": [2], "seed": [0]},
        "search": {"params": ["alpha"], "candidates": 2, "folds": [1]},
        "resources": {"cpu": 1},
        "max_failures": 0,
    }
    (tmp_path / "mt.yaml").write_text(yaml.safe_dump(study))
    cmd = [sys.executable, "-m", "mismatch", "search", "mt.yaml", "--storage", "results"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    rows = pd.read_parquet(tmp_path / "results" / "mt-search" / "trials")
    assert len(rows) == 2 and (rows["status"] == "completed").all(), rows[["status", "error"]]
    assert (rows["fold"] == 1).all()
    assert {os.path.realpath(json.loads(s)["data"]["prepared"]) for s in rows["spec_json"]} == {
        os.path.realpath(tmp_path / "prep")}
    assert 0.1 in set(rows["alpha"]) and rows["alpha"].nunique() == 2  # the paper's weight first, then TPE's
    best = json.loads((tmp_path / "results" / "mt-search" / "best.json").read_text())
    found = best["methods"]["mean-teacher"]
    assert set(found["params"]) == {"alpha"} and found["params"]["alpha"] in set(rows["alpha"])
    assert found["candidates"] == 2 and found["trials"] == 2 and found["train_time_s"] > 0
    assert abs(found["objective"] - rows["final_val_iou"].max()) < 1e-9
    # scored on the held-out case only, which no fold of the table tests on
    splits = json.loads(rows["splits_json"].iloc[0])
    cases = [f"vessels_{i:03d}" for i in range(7)]  # the phantom's case ids
    assert {c for role in splits.values() for c in role} <= set(cases)
    held = held_out_cases(cases, ProtocolSpec(**protocol))
    assert found["validation_cases"] == held == splits["validation"]
    table_tests = {c for s in make_all_splits(cases, ProtocolSpec(**protocol)).values() for c in s["test"]}
    assert not table_tests & set(held)

    # a table naming the search trains Mean Teacher with the tuned weight
    table = {**study, "name": "table", "search": None, "tuned": "mt-search", "grid": {"labelled_slices": [2], "fold": [0, 1]}}
    (tmp_path / "table.yaml").write_text(yaml.safe_dump(table))
    specs = load_study(tmp_path / "table.yaml", storage=str(tmp_path / "results")).trials()
    assert {s.method.alpha for s in specs} == {found["params"]["alpha"]}


def _pruned_search_file(tmp_path: Path) -> Path:
    study = {
        "name": "asha",
        "base": {"data": {"synthetic": {"kind": "vessels", "cases": 7, "size": [32, 32], "slices": 8}},
                 "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2, "tuning_cases": 1},
                 "train": {"epochs": 4, "snapshot_k": 1, "prediction_maps": 0}},
        # Mean Teacher's weight ramps up over 2 epochs here: its grace, and its first rung, is 2
        "methods": [{"name": "sup1", "width": 4}, {"name": "mean-teacher", "width": 4, "rampup_epochs": 2}],
        "grid": {"labelled_slices": [2], "seed": [0]},
        "search": {"params": ["train.lr"], "folds": [0], "scheduler": "asha", "grace_epochs": 1,
                   "reduction_factor": 2, "budget_epochs": 12},
        "resources": {"cpu": 1},
        "max_concurrent": 1,
        "max_failures": 0,
    }
    path = tmp_path / "asha.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _journal_study(storage: Path, name: str) -> optuna.Study:
    journal = storage / "asha" / "optuna" / "journal.log"
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))


def test_a_pruned_search_killed_between_rungs_resumes_and_keeps_equal_budgets(tmp_path):
    """ASHA on two methods with the same budget of 12 trial-epochs: killed once a candidate has
    reported its first rung, resumed; pruned candidates are PRUNED in the journal, absent from
    best.json, and every epoch trained, pruned ones included, is in the ledger."""
    storage = tmp_path / "results"
    cmd = [sys.executable, "-m", "mismatch", "search", str(_pruned_search_file(tmp_path)), "--storage", str(storage)]
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            journal = storage / "asha" / "optuna" / "journal.log"
            if journal.exists() and journal.stat().st_size and any(
                    t.intermediate_values for t in _journal_study(storage, "asha.sup1").trials):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("no candidate reported a rung before the kill")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming the interrupted search" in rerun.stdout
    assert "asha: grace 2 epochs, reduction factor 2, rungs at epochs 2" in rerun.stdout

    best = json.loads((storage / "asha" / "best.json").read_text())
    rows = pd.read_parquet(storage / "asha" / "trials")
    epochs = pd.read_parquet(storage / "asha" / "epochs")
    for method, name in (("sup1", "asha.sup1"), ("mean-teacher", "asha.mean-teacher")):
        ot = _journal_study(storage, name)
        states = optuna.trial.TrialState
        complete = [t for t in ot.trials if t.state == states.COMPLETE]
        pruned = [t for t in ot.trials if t.state == states.PRUNED]
        found = best["methods"][method]
        # the best values are a COMPLETE candidate's, scored at the full budget
        assert found["objective"] == max(t.value for t in complete)
        assert found["params"]["train.lr"] == max(complete, key=lambda t: t.value).params["train__lr"]
        assert found["pruned_candidates"] == len(pruned)
        mine = rows[rows["method"] == method]
        assert set(mine["status"]) <= {"completed", "pruned"}
        assert (mine.loc[mine["status"] == "completed", "epochs"] == 4).all()
        # the ledger: every epoch trained, each stored once, pruned runs included
        assert found["trial_epochs"] == int(mine["epochs"].sum()) == sum(t.user_attrs["trial_epochs"] for t in ot.trials)
        done = epochs[epochs["trial_id"].isin(mine.loc[mine["status"] == "completed", "trial_id"])]
        assert not done.duplicated(["trial_id", "epoch"]).any()
        # the same budget for both: candidates start while less than 12 trial-epochs are spent,
        # one at a time, so a method spends at least 12 and less than 12 + one full candidate
        assert 12 <= found["trial_epochs"] < 12 + 4
        assert found["rungs"] == ([1, 2] if method == "sup1" else [2])
    mt = rows[(rows["method"] == "mean-teacher") & (rows["status"] == "pruned")]
    assert (mt["epochs"] >= 2).all()  # never pruned before its ramp-up ends
    assert best["methods"]["sup1"]["pruned_candidates"] >= 1
