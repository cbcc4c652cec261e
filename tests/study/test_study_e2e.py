"""End to end on a real (embedded, local) Ray: run, skip, add, fail for good, kill and resume.

The most valuable test of the project: it drives `mismatch study run` as a user does, in a
subprocess, and checks the Parquet rows that the trials write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mismatch.study.spec import load_study
from mismatch.study.store import read_table

STUDY = {
    "name": "e2e",
    "base": {
        "data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10, "seed": 0}},
        "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2},
        "train": {"epochs": 1, "snapshot_k": 1, "prediction_maps": 1},
    },
    "methods": [{"name": "mismatch", "width": 4}, {"name": "sup1", "width": 4}],
    "grid": {"labelled_slices": [2], "fold": [0], "seed": [0]},
    "resources": {"cpu": 1},
    "max_failures": 1,
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _run(args: list[str], env: dict | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mismatch", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _rows(storage: Path, study: str = "e2e") -> pd.DataFrame:
    return read_table(str(storage), study, "trials")


def test_run_skip_add_and_fail_for_good(tmp_path):
    storage = tmp_path / "results"
    study_file = _write(tmp_path / "study.yaml", STUDY)
    first = _run(["study", "run", str(study_file), "--storage", str(storage)])
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2/2 done, 0 failed" in first.stdout
    trials = _rows(storage)
    expected = {t.trial_id() for t in load_study(study_file).trials()}
    assert set(trials["trial_id"]) == expected and (trials["status"] == "completed").all()
    images = pd.read_parquet(storage / "e2e" / "images")
    assert set(images["trial_id"]) == expected and images.groupby("trial_id").size().nunique() == 1
    mtimes = {p.name: p.stat().st_mtime_ns for p in (storage / "e2e" / "images").iterdir()}

    again = _run(["study", "run", str(study_file), "--storage", str(storage)])
    assert again.returncode == 0 and "2 already done, 0 to run" in again.stdout

    # Add a fold and a trial that fails for good (more labelled slices than the case has).
    bigger = {**STUDY, "grid": {"labelled_slices": [2, 500], "fold": [0, 1], "seed": [0]}}
    _write(study_file, bigger)
    third = _run(["study", "run", str(study_file), "--storage", str(storage)])
    assert "2 already done, 6 to run" in third.stdout
    assert third.returncode == 1  # some trials failed for good
    trials = _rows(storage)
    assert len(trials) == 8 and trials["trial_id"].is_unique
    failed = trials[trials["status"] == "failed"]
    assert len(failed) == 4 and (failed["labelled_slices"] == 500).all()
    assert failed["error"].str.contains("500").all()
    completed = trials[trials["status"] == "completed"]
    assert len(completed) == 4
    # the first two trials were not re-run: their files are untouched
    assert {p.name: p.stat().st_mtime_ns for p in (storage / "e2e" / "images").iterdir() if p.name in mtimes} == mtimes

    status = _run(["study", "status", str(study_file), "--storage", str(storage)])
    assert "8 trials: 4 done, 0 running, 4 failed, 0 pending" in status.stdout
    merged = tmp_path / "merged.parquet"
    export = _run(["study", "export", str(study_file), "--storage", str(storage), "--out", str(merged)])
    assert export.returncode == 0
    assert len(pd.read_parquet(merged)) == len(pd.read_parquet(storage / "e2e" / "images"))


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_killed_driver_resumes_from_checkpoints_without_duplicates(tmp_path):
    storage = tmp_path / "results"
    slow = {**STUDY, "name": "kill",
            "base": {**STUDY["base"], "train": {"epochs": 6, "snapshot_k": 2}},
            "methods": [{"name": "mismatch", "width": 4}],
            "grid": {"labelled_slices": [2], "fold": [0, 1, 2], "seed": [0]}}
    study_file = _write(tmp_path / "kill.yaml", slow)
    checkpoints = storage / "kill" / "checkpoints"
    driver = subprocess.Popen([sys.executable, "-m", "mismatch", "study", "run", str(study_file), "--storage",
                               str(storage)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        started = _wait_for(lambda: checkpoints.exists() and any(checkpoints.glob("*/trial.pt")), 300)
        assert started, "no trial wrote a checkpoint"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        driver.wait(timeout=60)
    interrupted = {p.parent.name for p in checkpoints.glob("*/trial.pt")}
    assert interrupted

    rerun = _run(["study", "run", str(study_file), "--storage", str(storage)])
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    trials = _rows(storage, "kill")
    assert len(trials) == 3 and trials["trial_id"].is_unique and (trials["status"] == "completed").all()
    resumed = trials[trials["trial_id"].isin(interrupted)]
    assert (resumed["resumed_from_epoch"] > 0).any(), trials[["trial_id", "resumed_from_epoch"]]
    assert (trials["epochs"] == 6).all()
    epochs = read_table(str(storage), "kill", "epochs")
    assert (epochs.groupby("trial_id")["epoch"].apply(sorted).map(list) == [list(range(6))] * 3).all()
    assert not any(checkpoints.glob("*/trial.pt"))
