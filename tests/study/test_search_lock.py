"""`mismatch search` holds the study's driver lock and checks resources before any candidate."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from mismatch.cli import main
from mismatch.study import ray_session, resources, search

STUDY_FILE = Path(__file__).resolve().parents[2] / "studies" / "alpha_search.yaml"
ARGS = ["search", "alpha", str(STUDY_FILE), "--profile", "smoke"]
STUDY = "alpha_search-smoke"


def test_a_second_search_on_a_locked_study_refuses_naming_the_holder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ray_session, "init_ray", lambda *a, **k: pytest.fail("Ray started on a locked study"))
    lock = tmp_path / STUDY / "driver.lock"
    lock.parent.mkdir(parents=True)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-11-29T18:00:00Z"}  # live
    lock.write_text(json.dumps(holder))
    assert main([*ARGS, "--storage", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: study {STUDY} is already being run by another driver")
    assert f"(host {holder['host']}, pid {os.getpid()}, started 2026-11-29T18:00:00Z;" in lines[0]
    assert json.loads(lock.read_text()) == holder  # the holder's lock is untouched


def test_a_search_refuses_impossible_resources_before_any_candidate_and_unlocks(tmp_path, monkeypatch, capsys):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray_session, "init_ray", lambda *a, **k: None)
    monkeypatch.setattr(resources, "effective_resources", lambda study: {"cpu": 64, "gpu": 0})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}])
    monkeypatch.setattr(search, "_fit_one", lambda *a, **k: pytest.fail("a candidate started"))
    assert main([*ARGS, "--storage", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == ("error: resources.cpu: 64 requested per trial, but the largest node has 2 CPUs "
                    "(this machine; lower 'resources' in the study file)")
    assert not (tmp_path / STUDY / "driver.lock").exists()  # released on the way out
