"""Study level: a multi-class 2D study and a 3D study run with ``--fuse 2`` store, for every
trial, exactly the rows of the same trial trained alone (the default CPU kernels: a group steps
its members one by one, so fusing is a scheduling choice that cannot change a table).

Issue 25: a fused multi-class trial was once built as a binary network (no classes table) and
a fused 3D trial failed. Each test drives `mismatch study run` in a subprocess (a real Ray),
then trains the study's trials alone in this process and compares the stored rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mismatch.data.synth import write_synthetic_dataset
from mismatch.study.store import read_table
from mismatch.study.trials import load_study
from mismatch.trial.run import run_trial

pytestmark = pytest.mark.slow  # two studies on a real Ray: CI runs them, the developer loop leaves them out

TRAIN = {"epochs": 1, "snapshot_k": 1, "device": "cpu", "prediction_maps": 1, "stream": "two-stream"}


def _study(tmp_path: Path, name: str, data: dict, protocol: dict, method: dict, batch_size: int) -> Path:
    study = {
        "name": name,
        "base": {"data": data, "protocol": protocol, "train": {**TRAIN, "batch_size": batch_size}},
        "methods": [{"name": "mismatch", "width": 4, "alpha": [0.002, 0.004], **method}],
        "grid": {"fold": [0], "seed": [0]},
        "resources": {"cpu": 1, "fuse": 2},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _assert_stored_rows_equal_trials_alone(study_file: Path, storage: Path, tables: tuple[str, ...]) -> None:
    run = subprocess.run([sys.executable, "-m", "mismatch", "study", "run", str(study_file), "--storage", str(storage),
                          "--tracking", "none"], capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 trial(s) in 1 fused group(s)" in run.stdout, run.stdout
    study = load_study(study_file)
    trials = read_table(str(storage), study.name, "trials").set_index("trial_id")
    assert (trials["fuse_size"] == 2).all() and (trials["status"] == "completed").all()
    for spec in study.trials():
        alone = run_trial(spec)
        assert trials.loc[spec.trial_id(), "params"] == alone.trial["params"]
        for table in tables:
            stored = read_table(str(storage), study.name, table)
            stored = stored[stored["trial_id"] == spec.trial_id()].reset_index(drop=True)
            mine = getattr(alone, table)
            assert mine is not None and len(stored) == len(mine) > 0, table
            numeric = [c for c in mine.columns if pd.api.types.is_numeric_dtype(mine[c]) and c != "time_s"]
            pd.testing.assert_frame_equal(stored[numeric], mine[numeric].reset_index(drop=True), check_dtype=False)


def test_a_fused_multi_class_study_stores_the_rows_of_its_trials_alone(tmp_path):
    root = write_synthetic_dataset(tmp_path / "acdc", "acdc-h5", 4, size=(24, 24), slices=4)
    study_file = _study(tmp_path, "mc", {"root": str(root), "preset": "acdc"},
                        {"preset": "acdc-3", "labelled_cases": 1}, {}, batch_size=4)
    _assert_stored_rows_equal_trials_alone(study_file, tmp_path / "runs", ("images", "classes", "epochs"))


def test_a_fused_3d_study_stores_the_rows_of_its_trials_alone(tmp_path):
    root = write_synthetic_dataset(tmp_path / "la", "la2018-h5", 4, size=(32, 32), slices=16)
    study_file = _study(tmp_path, "la", {"root": str(root), "preset": "la2018", "patch_size": [16, 32, 32]},
                        {"preset": "la-8", "labelled_cases": 1, "validation_cases": 1}, {"model": "mm3d"},
                        batch_size=1)
    _assert_stored_rows_equal_trials_alone(study_file, tmp_path / "runs", ("images", "cases", "epochs"))
