"""A smoke study on a real two-node Ray cluster: placement on both nodes, then a node killed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mismatch.study.store import read_table
from mismatch.study.trials import load_study

# Real Ray clusters: minutes on 2 cores. CI runs them (`python -m pytest`); the developer loop
# (`python -m pytest -m "not slow"`) leaves them out.
pytestmark = pytest.mark.slow

STUDY = {
    "name": "cluster",
    "tracking": "none",  # tracking is tested in tests/study/test_tracking.py; a store costs seconds
    "base": {
        "data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10, "seed": 0}},
        "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2},
        "train": {"epochs": 5, "snapshot_k": 2},
    },
    "methods": [{"name": "mismatch", "width": 4}],
    # 12 trials: node_b finishes one while others still run, whatever the two nodes' pace (with
    # 6, node_b's first row could come with the last trial and the kill below never fired)
    "grid": {"labelled_slices": [2], "fold": [0, 1, 2, 3, 4, 5], "seed": [0, 1]},
    "resources": {"cpu": 1, "gpu": 0.5},  # no GPU on the cluster: trials fall back to the CPU
    "max_failures": 3,
}


N_TRIALS = 12


def _node_of(nodes: list[dict]) -> dict[str, str]:
    """Ray node id -> the custom resource that names the node."""
    return {n["id"]: next(k for k in n["resources"] if k.startswith("node_")) for n in nodes}


def test_study_uses_both_nodes_and_survives_losing_one(loopback_cluster, tmp_path):
    cluster = loopback_cluster
    nodes = _node_of(cluster.alive_nodes())
    assert sorted(nodes.values()) == ["node_a", "node_b"]
    study_file = tmp_path / "cluster.yaml"
    study_file.write_text(yaml.safe_dump(STUDY))
    storage = tmp_path / "shared"  # one filesystem: what a shared mount gives a real cluster
    # The script `ray submit` uploads: the same code path as `mismatch study run`.
    submit = Path(__file__).parents[2] / "cluster" / "submit_study.py"
    driver = subprocess.Popen(
        [sys.executable, str(submit), str(study_file), "--storage", str(storage), "--address", cluster.address],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Kill node_b once it has finished a trial and trials are still in flight.
        deadline = time.monotonic() + 400
        killed = False
        while time.monotonic() < deadline and driver.poll() is None:
            rows = read_table(str(storage), "cluster", "trials", columns=["ray_node_id"])
            on_b = rows["ray_node_id"].map(nodes.get).eq("node_b").any() if len(rows) else False
            in_flight = any((storage / "cluster" / "checkpoints").glob("*/trial.pt"))
            if on_b and in_flight and len(rows) < N_TRIALS:
                cluster.kill_node("node_b")
                killed = True
                break
            time.sleep(0.5)
        assert killed, "node_b never finished a trial while others were running"
        out, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, out

    expected = {t.trial_id() for t in load_study(study_file).trials()}
    trials = read_table(str(storage), "cluster", "trials")
    assert set(trials["trial_id"]) == expected and trials["trial_id"].is_unique
    assert (trials["status"] == "completed").all() and (trials["epochs"] == 5).all()
    placed = set(trials["ray_node_id"].map(nodes.get))
    assert placed == {"node_a", "node_b"}
    images = pd.read_parquet(storage / "cluster" / "images")
    assert set(images["trial_id"]) == expected
    assert images.groupby("trial_id").size().nunique() == 1  # one result set per trial
    assert len(list((storage / "cluster" / "images").glob("*.parquet"))) == len(expected)
    # every epoch of every trial once, whether or not it was interrupted on node_b
    epochs = read_table(str(storage), "cluster", "epochs")
    assert (epochs.groupby("trial_id")["epoch"].apply(lambda e: sorted(e) == list(range(5)))).all()
    assert not list(Path(storage / "cluster").glob("**/*.tmp"))
