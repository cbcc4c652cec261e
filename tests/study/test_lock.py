"""The driver lock: one driver per study and storage (no Ray needed)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mismatch.study.lock import LOCK_NAME, LockHeld, StudyLock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant(path: Path, host: str, pid: int, age_s: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "started": "2026-01-01T00:00:00Z"}))
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))


def test_second_acquire_names_the_holder_and_release_removes_the_lock(tmp_path):
    first = StudyLock(str(tmp_path), "s")
    first.acquire()
    lock = tmp_path / "s" / LOCK_NAME
    held = json.loads(lock.read_text())
    assert (held["host"], held["pid"]) == (socket.gethostname(), os.getpid())
    with pytest.raises(LockHeld, match=rf"host {socket.gethostname()}, pid {os.getpid()}, started 20"):
        StudyLock(str(tmp_path), "s").acquire()
    first.release()
    assert not lock.exists()
    with StudyLock(str(tmp_path), "s"):  # free again
        assert lock.exists()
    assert not lock.exists()


def test_release_removes_the_study_folder_only_when_it_made_it_and_left_it_empty(tmp_path):
    with StudyLock(str(tmp_path), "new"):
        assert (tmp_path / "new" / LOCK_NAME).exists()
    assert not (tmp_path / "new").exists()  # a refused study leaves no empty folder
    (tmp_path / "old").mkdir()
    with StudyLock(str(tmp_path), "old"):
        pass
    assert (tmp_path / "old").is_dir()  # it was there before: kept
    with StudyLock(str(tmp_path), "rows"):
        (tmp_path / "rows" / "trials").mkdir()
    assert (tmp_path / "rows" / "trials").is_dir()  # written into: kept


def test_acquire_remakes_a_folder_another_drivers_release_removed_meanwhile(tmp_path, monkeypatch):
    real_open = os.open
    calls = []

    def open_after_removal(path, *args):
        if str(path).endswith(LOCK_NAME) and not calls:
            calls.append(path)
            os.rmdir(tmp_path / "s")  # the other driver's release, between makedirs and the create
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", open_after_removal)
    with StudyLock(str(tmp_path), "s"):
        assert calls and (tmp_path / "s" / LOCK_NAME).exists()


def test_a_lock_of_a_dead_pid_on_this_host_is_taken_over_saying_so(tmp_path):
    lock = tmp_path / "s" / LOCK_NAME
    dead = _dead_pid()
    _plant(lock, socket.gethostname(), dead)
    said = io.StringIO()
    with StudyLock(str(tmp_path), "s", stream=said):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"pid {dead} is gone" in said.getvalue() and "took over" in said.getvalue()
    assert not lock.exists() and list(lock.parent.iterdir()) == []  # nothing left aside


def test_another_hosts_lock_is_held_while_it_beats_and_stale_without_heartbeat(tmp_path):
    lock = tmp_path / "s" / LOCK_NAME
    _plant(lock, "other-host", 4242, age_s=10)
    with pytest.raises(LockHeld, match="host other-host, pid 4242"):
        StudyLock(str(tmp_path), "s", stale_after_s=60).acquire()
    assert json.loads(lock.read_text())["host"] == "other-host"  # a refusal leaves the holder's lock alone
    _plant(lock, "other-host", 4242, age_s=120)
    said = io.StringIO()
    with StudyLock(str(tmp_path), "s", stale_after_s=60, stream=said):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert "no heartbeat for 120 s" in said.getvalue()


def test_heartbeat_refreshes_the_mtime_and_release_spares_a_lock_that_is_not_ours(tmp_path):
    lock = tmp_path / "s" / LOCK_NAME
    held = StudyLock(str(tmp_path), "s", heartbeat_s=0.05)
    held.acquire()
    old = time.time() - 1000
    os.utime(lock, (old, old))
    time.sleep(0.5)
    assert time.time() - lock.stat().st_mtime < 100
    _plant(lock, "other-host", 4242)  # taken over by another driver meanwhile
    held.release()
    assert json.loads(lock.read_text())["host"] == "other-host"


def test_object_storage_lock_is_best_effort_and_says_so():
    pytest.importorskip("fsspec")
    said = io.StringIO()
    uri = f"memory://locks-{os.getpid()}-{time.time_ns()}"
    with StudyLock(uri, "s", stream=said):
        assert "best effort" in said.getvalue()
        with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
            StudyLock(uri, "s", stream=io.StringIO()).acquire()
    with StudyLock(uri, "s", stream=io.StringIO()):  # released: free again
        pass


def test_study_run_refuses_while_another_driver_holds_the_lock(tmp_path, capsys):
    from mismatch.cli import main

    study = {
        "name": "locked",
        "base": {"data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10, "seed": 0}},
                 "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2},
                 "train": {"epochs": 1}},
        "methods": [{"name": "sup1", "width": 4}],
        "grid": {"labelled_slices": [2], "fold": [0], "seed": [0]},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    storage = tmp_path / "results"
    _plant(storage / "locked" / LOCK_NAME, socket.gethostname(), os.getppid())  # a live process
    assert main(["study", "run", str(path), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getppid()}" in err and "already being run by another driver" in err
    assert not (storage / "locked" / "trials").exists()
