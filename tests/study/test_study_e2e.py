"""End to end on a real (embedded, local) Ray: run, skip, add, fail for good, kill and resume.

The most valuable test of the project: it drives `mismatch study run` as a user does, in a
subprocess, and checks the Parquet rows that the trials write.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mismatch.data import write_synthetic_dataset
from mismatch.study.store import corrupt_files, read_table
from mismatch.study.trials import load_study

# Real Ray clusters: minutes on 2 cores. CI runs them (`python -m pytest`); the developer loop
# (`python -m pytest -m "not slow"`) leaves them out.
pytestmark = pytest.mark.slow

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


ROOT = Path(__file__).parents[2]
# Tests of other behaviour run without a tracker: the quickstart test and tests/study/test_tracking.py
# cover it, and each MLflow store costs seconds to create.
NO_TRACKING = ["--tracking", "none"]


def test_quickstart_smoke_end_to_end(tmp_path):
    study_file = ROOT / "studies" / "quickstart.yaml"
    storage = tmp_path / "results"
    proc = _run(["study", "run", str(study_file), "--profile", "smoke", "--storage", str(storage)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    specs = {t.trial_id(): t for t in load_study(study_file, profile="smoke").trials()}
    assert len(specs) >= 4
    trials = _rows(storage, "quickstart-smoke").set_index("trial_id")
    assert set(trials.index) == set(specs) and (trials["status"] == "completed").all()
    images = pd.read_parquet(storage / "quickstart-smoke" / "images")
    for tid, spec in specs.items():
        row = trials.loc[tid]
        assert (row["method"], row["fold"], row["labelled_slices"]) == (
            spec.method.name, spec.protocol.fold, spec.protocol.labelled_slices)
        assert row["params"] > 0 and row["train_time_s"] > 0 and row["epochs"] == spec.train.epochs
        mine = images[images["trial_id"] == tid]
        assert len(mine) == row["n_test_images"] > 0
        assert set(mine["case_id"]) == set(json.loads(row["splits_json"])["test"])
        assert mine[["iou", "dice", "ece", "brier"]].notna().all().all()
        assert ((mine["tp"] + mine["fp"] + mine["fn"] + mine["tn"]) == mine["bin0_count"] + mine["bin1_count"]
                + mine["bin2_count"] + mine["bin3_count"] + mine["bin4_count"]).all()
        assert (storage / "quickstart-smoke" / "predictions" / f"{tid}.npz").exists()
    # the default tracker: one MLflow run per trial in the study's local store, tagged with its trial id
    runs = _mlflow_runs(storage, "quickstart-smoke")
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(specs)


def test_run_skip_add_and_fail_for_good(tmp_path):
    storage = tmp_path / "results"
    study_file = _write(tmp_path / "study.yaml", STUDY)
    first = _run(["study", "run", str(study_file), *NO_TRACKING, "--storage", str(storage), *NO_TRACKING])
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2/2 done, 0 failed" in first.stdout
    trials = _rows(storage)
    expected = {t.trial_id() for t in load_study(study_file).trials()}
    assert set(trials["trial_id"]) == expected and (trials["status"] == "completed").all()
    images = pd.read_parquet(storage / "e2e" / "images")
    assert set(images["trial_id"]) == expected and images.groupby("trial_id").size().nunique() == 1
    mtimes = {p.name: p.stat().st_mtime_ns for p in (storage / "e2e" / "images").iterdir()}

    again = _run(["study", "run", str(study_file), *NO_TRACKING, "--storage", str(storage), *NO_TRACKING])
    assert again.returncode == 0 and "2 already done, 0 to run" in again.stdout

    # Add a fold and a trial that fails for good (more labelled slices than the case has), and
    # cut one finished trial's images file in half, as a crash or a full disk could: the run
    # quarantines it and runs that trial again (one real-Ray run for both: each costs ~15 s of CI).
    bigger = {**STUDY, "grid": {"labelled_slices": [2, 500], "fold": [0, 1], "seed": [0]}}
    _write(study_file, bigger)
    broken = sorted(mtimes)[0]
    damaged = _truncate(storage / "e2e" / "images" / broken)
    third = _run(["study", "run", str(study_file), *NO_TRACKING, "--storage", str(storage), *NO_TRACKING])
    assert f"quarantined {damaged} -> {storage}/e2e/quarantine/images/{broken}" in third.stdout
    assert "1 already done, 7 to run" in third.stdout
    assert third.returncode == 1  # some trials failed for good
    assert corrupt_files(str(storage), "e2e") == []
    trials = _rows(storage)
    assert len(trials) == 8 and trials["trial_id"].is_unique
    failed = trials[trials["status"] == "failed"]
    assert len(failed) == 4 and (failed["labelled_slices"] == 500).all()
    assert failed["error"].str.contains("500").all()
    completed = trials[trials["status"] == "completed"]
    assert len(completed) == 4 and set(expected) <= set(completed["trial_id"])
    assert set(pd.read_parquet(storage / "e2e" / "images")["trial_id"]) == set(completed["trial_id"])
    # the other first trial was not re-run: its file is untouched; the quarantined one's was rewritten
    now = {p.name: p.stat().st_mtime_ns for p in (storage / "e2e" / "images").iterdir() if p.name in mtimes}
    assert {k: v for k, v in now.items() if k != broken} == {k: v for k, v in mtimes.items() if k != broken}
    assert now[broken] != mtimes[broken]

    status = _run(["study", "status", str(study_file), "--storage", str(storage)])
    assert "8 trials: 4 done, 0 running, 4 failed, 0 pending" in status.stdout
    merged = tmp_path / "merged.parquet"
    export = _run(["study", "export", str(study_file), "--storage", str(storage), "--out", str(merged)])
    assert export.returncode == 0
    assert len(pd.read_parquet(merged)) == len(pd.read_parquet(storage / "e2e" / "images"))


def _truncate(path: Path) -> str:
    """Cut a stored file to half its length; returns its path."""
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    return str(path)


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_killed_driver_resumes_trials_and_a_fused_group_from_checkpoints(tmp_path):
    """Kill the driver (and its Ray) once a fused group of 2 and a trial alone have checkpointed:
    status counts the group's members as running; the re-run takes over the stale lock, plans the
    same group, resumes every interrupted trial and member, stores each epoch once and continues
    each one's MLflow run (one real-Ray kill for both kinds of unit: each costs ~30 s of CI)."""
    storage = tmp_path / "results"
    slow = {**STUDY, "name": "kill",
            "base": {**STUDY["base"], "train": {"epochs": 4, "snapshot_k": 2, "stream": "two-stream"}},
            "methods": [{"name": "mismatch", "width": 4}],
            "grid": {"labelled_slices": [2], "fold": [0, 1, 2], "seed": [0]},
            "resources": {"cpu": 1, "fuse": 2}}  # folds 0 and 1 in one group, fold 2 alone
    study_file = _write(tmp_path / "kill.yaml", slow)
    checkpoints = storage / "kill" / "checkpoints"
    # with the default tracker: a resumed trial must continue its MLflow run, each epoch logged once
    driver = subprocess.Popen([sys.executable, "-m", "mismatch", "study", "run", str(study_file), "--storage",
                               str(storage)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        started = _wait_for(lambda: any(checkpoints.glob("fused-*/fused.pt")) and any(checkpoints.glob("*/trial.pt")),
                            300)
        assert started, "the group and the trial alone did not both write a checkpoint"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        driver.wait(timeout=60)
    folder = next(checkpoints.glob("fused-*/fused.pt")).parent
    group = json.loads((folder / "members.json").read_text())
    alone = {p.parent.name for p in checkpoints.glob("*/trial.pt")}
    interrupted = set(group) | alone
    assert len(group) == 2 and len(alone) == 1 and not alone & set(group)
    before = {r.data.tags["trial_id"]: r.info.run_id for r in _mlflow_runs(storage, "kill")}
    assert interrupted <= set(before)  # a checkpointed trial or member has its run (opened before training)
    status = _run(["study", "status", str(study_file), "--storage", str(storage)])
    assert "3 trials: 0 done, 3 running, 0 failed, 0 pending" in status.stdout, status.stdout

    rerun = _run(["study", "run", str(study_file), "--storage", str(storage)])
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "took over a stale driver lock" in rerun.stderr  # the killed driver's lock (its pid is gone)
    trials = _rows(storage, "kill").set_index("trial_id")
    assert len(trials) == 3 and trials.index.is_unique and (trials["status"] == "completed").all()
    assert (trials["resumed_from_epoch"] > 0).all(), trials["resumed_from_epoch"]
    assert (trials["epochs"] == 4).all()
    assert (trials.loc[group, "fuse_size"] == 2).all() and set(trials.loc[group, "fuse_group"]) == {folder.name}
    assert trials.loc[sorted(alone), "fuse_size"].tolist() == [1] and trials.loc[sorted(alone), "fuse_group"].tolist() == [""]
    epochs = read_table(str(storage), "kill", "epochs")
    assert (epochs.groupby("trial_id")["epoch"].apply(sorted).map(list) == [list(range(4))] * 3).all()
    assert not any(checkpoints.glob("*/trial.pt")) and not any(checkpoints.glob("fused-*/fused.pt"))
    runs = _mlflow_runs(storage, "kill")
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(trials.index)  # one run per trial
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all({r.data.tags["trial_id"]: r.info.run_id for r in runs}[t] == before[t] for t in before)
    client = _mlflow_client(storage, "kill")
    for run in runs:  # every epoch's metrics exactly once
        for key in ("val_iou", "loss_loss", "epoch"):
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(4)), key
    assert len({r.data.tags["config_group"] for r in runs}) == 1  # three folds of one configuration


def _mlflow_client(storage: Path, study: str):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{storage / study / 'mlruns' / 'mlflow.db'}")


def _mlflow_runs(storage: Path, study: str) -> list:
    client = _mlflow_client(storage, study)
    experiment = client.get_experiment_by_name(study)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _trainable_pids(session: int) -> list[int]:
    """Ray worker processes running a Tune function trainable (named by Ray's setproctitle) in
    the driver's ``session`` only: another Ray on the machine (a parallel test run) is left alone."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::ImplicitFunc") and os.getsid(int(entry.name)) == session:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_crashed_trial_is_retried_from_its_checkpoint(tmp_path):
    """The trial's worker is killed mid-run: Tune retries it from its checkpoint. The study also
    names its dataset and storage relatively: Tune runs trials in their own working folders, and
    the paths must still mean "relative to where the study starts" (one real-Ray run for both)."""
    write_synthetic_dataset(tmp_path / "data" / "v", "vessels", 6, (32, 32), 10, seed=0)
    crash = {**STUDY, "name": "crash", "base": {**STUDY["base"], "data": {"root": "data/v"},
                                                "train": {"epochs": 5, "snapshot_k": 2}},
             "methods": [{"name": "mismatch", "width": 4}], "grid": {"labelled_slices": [2], "fold": [0]},
             "max_failures": 2}
    _write(tmp_path / "crash.yaml", crash)
    storage = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, "-m", "mismatch", "study", "run", "crash.yaml", *NO_TRACKING, "--storage",
                               "out"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        assert _wait_for(lambda: any((storage / "crash" / "checkpoints").glob("*/trial.pt")), 300)
        victims = _trainable_pids(driver.pid)  # the driver leads its own session
        assert victims, "no trainable process found"
        for pid in victims:  # the trial's worker dies as on an out-of-memory kill
            os.kill(pid, signal.SIGKILL)
        out, _ = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 0, out
    trials = _rows(storage, "crash")
    assert len(trials) == 1 and trials.iloc[0]["status"] == "completed"
    assert trials.iloc[0]["resumed_from_epoch"] > 0 and trials.iloc[0]["epochs"] == 5
    assert json.loads(trials.iloc[0]["spec_json"])["data"]["root"] == str(tmp_path / "data" / "v")
    epochs = read_table(str(storage), "crash", "epochs")
    assert sorted(epochs["epoch"]) == list(range(5))
