"""Resources no node can provide are refused before any trial starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mismatch.study.resources import ResourceError, check_resources, node_shortfall


def _node(cpu: float, gpu: float = 0, alive: bool = True) -> dict:
    resources = {"CPU": cpu, "memory": 1e9, **({"GPU": gpu} if gpu else {})}
    return {"Alive": alive, "Resources": resources}


def test_shortfall_names_the_key_and_the_largest_node():
    assert node_shortfall({"cpu": 64, "gpu": 0}, [_node(2)]) == (
        "resources.cpu: 64 requested per trial, but the largest node has 2 CPUs")
    assert node_shortfall({"cpu": 1, "gpu": 2}, [_node(8, 1), _node(4, 1)]) == (
        "resources.gpu: 2 requested per trial, but the largest node has 1 GPUs")
    assert node_shortfall({"cpu": 1, "gpu": 0}, []) == (
        "resources.cpu: 1 requested per trial, but the largest node has 0 CPUs")


def test_a_trial_must_fit_on_one_live_node():
    assert node_shortfall({"cpu": 2, "gpu": 0.25}, [_node(2, 1)]) is None
    assert node_shortfall({"cpu": 4, "gpu": 0}, [_node(2), _node(2)]) == (
        "resources.cpu: 4 requested per trial, but the largest node has 2 CPUs")  # 2 + 2 is not 4 on one node
    assert node_shortfall({"cpu": 4, "gpu": 0}, [_node(16, alive=False), _node(2)]) is not None  # a dead node
    split = node_shortfall({"cpu": 4, "gpu": 1}, [_node(8), _node(2, 1)])
    assert split is not None and "no single node" in split and "resources.cpu: 4, resources.gpu: 1" in split


class _Study:
    name = "s"


def test_a_running_cluster_is_waited_for_then_refused(monkeypatch, capsys):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "nodes", lambda: [_node(2)])
    with pytest.raises(ResourceError, match=r"resources.cpu: 64 .*\(after waiting 0.2 s for the cluster at auto;"):
        check_resources(_Study(), {"cpu": 64, "gpu": 0}, "auto", wait_s=0.2, poll_s=0.05)
    assert "waiting up to 0.2 s" in capsys.readouterr().err
    with pytest.raises(ResourceError, match="this machine"):  # embedded Ray: no wait
        check_resources(_Study(), {"cpu": 64, "gpu": 0}, None, wait_s=100)


def test_a_node_added_while_waiting_lets_the_run_go_on(monkeypatch):
    ray = pytest.importorskip("ray")
    answers = iter([[_node(2)], [_node(2)], [_node(2), _node(64)]])
    monkeypatch.setattr(ray, "nodes", lambda: next(answers))
    check_resources(_Study(), {"cpu": 64, "gpu": 0}, "auto", wait_s=30, poll_s=0.01)  # returns: no error


STUDY = {
    "name": "toobig",
    "base": {"data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10, "seed": 0}},
             "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2},
             "train": {"epochs": 1}},
    "methods": [{"name": "sup1", "width": 4}],
    "grid": {"labelled_slices": [2], "fold": [0], "seed": [0]},
    "resources": {"cpu": 64},
}


@pytest.mark.slow
def test_embedded_ray_refuses_64_cpus_before_any_trial(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    storage = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "mismatch", "study", "run", str(path), "--storage", str(storage), "--tracking", "none"],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "resources.cpu: 64 requested per trial, but the largest node has" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (storage / "toobig" / "trials").exists()
    assert not (storage / "toobig" / "driver.lock").exists()  # released on the way out
    assert not list(Path(storage / "toobig").glob("checkpoints/*"))
