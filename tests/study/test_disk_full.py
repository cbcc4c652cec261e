"""A full disk (ENOSPC, simulated at each write path): one line naming the path, nothing
finished lost, no temporary file left, a non-zero exit without a traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from mismatch.atomic import DiskFullError, as_disk_full, is_disk_full
from mismatch.cli import main
from mismatch.study import runner, store, worker

NOTHING_LOST = "nothing finished was lost"
AGAIN = "run the same command again"


def enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


class _FillingStream:
    """An output stream that writes a few bytes, then finds the disk full."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()

    def write(self, data) -> None:
        self.stream.write(bytes(data)[:3])
        raise enospc()


class FullDisk:
    """A pyarrow filesystem whose every new file hits a full disk (everything else works)."""

    def __init__(self, fs) -> None:
        self.fs = fs

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def open_output_stream(self, path):
        return _FillingStream(self.fs.open_output_stream(path))


@pytest.fixture
def full_store(monkeypatch):
    """Fill the results store's disk: ``full_store()``; from then on its atomic writes fail."""
    real = store._write_atomic

    def fill() -> None:
        monkeypatch.setattr(store, "_write_atomic", lambda fs, path, payload: real(FullDisk(fs), path, payload))

    return fill


def _trial(storage: Path, trial_id: str) -> None:
    images = pd.DataFrame({"trial_id": [trial_id] * 2, "image": ["a", "b"], "iou": [0.5, 0.6]})
    store.write_trial(str(storage), "s", trial_id, {"trial_id": trial_id, "status": "completed"}, images=images)


def _tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_the_message_names_the_path_and_what_to_do():
    err = as_disk_full(enospc(), "/data/runs/s")
    assert isinstance(err, DiskFullError) and err.errno == errno.ENOSPC
    assert str(err).startswith("no space left on the disk of /data/runs/s: ")
    assert NOTHING_LOST in str(err) and AGAIN in str(err) and "\n" not in str(err)
    assert is_disk_full(OSError("Error writing bytes to file. Detail: [errno 28] No space left on device"))  # pyarrow's
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(OSError("98304 requested and 51168 written"))  # numpy's tofile on a full disk
    other = PermissionError(errno.EACCES, "Permission denied")
    assert not is_disk_full(other) and as_disk_full(other, "/x") is other


def test_a_store_write_on_a_full_disk_keeps_finished_trials_and_leaves_no_tmp(tmp_path, full_store):
    _trial(tmp_path, "t1")
    full_store()
    with pytest.raises(DiskFullError) as caught:
        _trial(tmp_path, "t2")
    assert caught.value.path == f"{tmp_path}/s/images/t2.parquet"
    assert NOTHING_LOST in str(caught.value)
    assert _tmp_files(tmp_path) == []
    assert store.trial_statuses(str(tmp_path), "s") == {"t1": "completed"}  # t2 has no row: it runs again
    assert list(store.read_table(str(tmp_path), "s", "images")["iou"]) == [0.5, 0.6]


def _study_file(tmp_path: Path, storage: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "s", "storage": str(storage),
        "base": {"data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10}},
                 "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2}},
        "methods": [{"name": "sup1"}], "grid": {"labelled_slices": [2], "fold": [0], "seed": [0]},
    }))
    return path


def test_study_export_on_a_full_disk_is_one_line_and_leaves_no_tmp(tmp_path, full_store, capsys):
    storage = tmp_path / "runs"
    _trial(storage, "t1")
    full_store()
    out = tmp_path / "out" / "merged.parquet"
    out.parent.mkdir()
    assert main(["study", "export", str(_study_file(tmp_path, storage)), "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: no space left on the disk of {out}: ") and AGAIN in line
    assert list(out.parent.iterdir()) == []  # neither the merged file nor a .uuid.tmp


def fill_the_disk_on_atomic_writes(monkeypatch) -> None:
    """Every :func:`mismatch.atomic.write_atomic` writes 3 bytes of its temporary file, then finds the disk full."""
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd, mode):
            self.handle = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(bytes(data)[:3])
            raise enospc()

    monkeypatch.setattr("mismatch.atomic.os.fdopen", FullDisk)


def test_a_checkpoint_on_a_full_disk_keeps_the_last_one_and_leaves_no_trial_tmp(tmp_path, monkeypatch):
    from mismatch.trial.checkpoint import save_checkpoint

    path = tmp_path / "trial.pt"
    path.write_bytes(b"the previous epoch's checkpoint")
    member = SimpleNamespace(method=SimpleNamespace(state_dict=dict), state=SimpleNamespace(epoch=3, snapshots=[]))
    stepper = SimpleNamespace(member_state=lambda k: {})
    fill_the_disk_on_atomic_writes(monkeypatch)
    with pytest.raises(DiskFullError) as caught:
        save_checkpoint(path, [member], stepper, group=False)
    assert caught.value.path == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial.pt"]
    assert path.read_bytes() == b"the previous epoch's checkpoint"


def test_data_prepare_on_a_full_disk_is_one_line_and_leaves_no_tmp_folder(tmp_path, monkeypatch, capsys):
    from mismatch.data import cache as cache_module
    from mismatch.data import write_synthetic_dataset

    raw = write_synthetic_dataset(tmp_path / "raw", "vessels", 3, (32, 32), 6, seed=0)
    calls = []

    def save(file, array, *args, **kwargs) -> None:
        calls.append(file)
        if len(calls) > 2:  # the first case fits, the second fills the disk
            Path(file).write_bytes(b"\x93NUMPY")
            raise enospc()
        with open(file, "wb") as handle:
            np.lib.format.write_array(handle, np.asarray(array))

    monkeypatch.setattr(cache_module.np, "save", save)
    out = tmp_path / "prepared"
    assert main(["data", "prepare", "msd", str(raw), str(out), "--quiet"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: no space left on the disk of {out}: ") and NOTHING_LOST in line
    assert not out.exists() and _tmp_files(tmp_path) == []


def test_data_synth_failing_or_killed_leaves_no_tmp_folder(tmp_path, monkeypatch, capsys):
    from mismatch.data import synth

    def interrupted(tmp, *args) -> None:
        (tmp / "case.nii.gz").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_write_into", interrupted)
    out = tmp_path / "vessels"
    with pytest.raises(KeyboardInterrupt):
        synth.write_synthetic_dataset(out, "vessels", 2, (32, 32), 6)
    assert list(tmp_path.iterdir()) == []

    def full(tmp, *args) -> None:
        raise enospc()

    monkeypatch.setattr(synth, "_write_into", full)
    assert main(["data", "synth", "vessels", str(out), "--cases", "2"]) == 1
    assert _one_error_line(capsys.readouterr().err).startswith(f"error: no space left on the disk of {out}: ")
    assert list(tmp_path.iterdir()) == []

    killed = tmp_path / f".vessels.tmp-{2**22 + 12345}-0123456789ab"  # a dead pid: a killed synth's folder
    killed.mkdir()
    monkeypatch.undo()
    synth.write_synthetic_dataset(out, "vessels", 2, (32, 32), 6)
    assert not killed.exists() and [p.name for p in tmp_path.iterdir()] == ["vessels"]


def test_report_on_a_full_disk_is_one_line_and_leaves_no_index_tmp(tmp_path, monkeypatch, capsys):
    from mismatch.report import build

    monkeypatch.setattr(build, "load_study", lambda *args: None)
    monkeypatch.setattr(build, "study_name", lambda data: "s")
    monkeypatch.setattr(build, "make_context", lambda data, opts: None)
    monkeypatch.setattr(build, "render", lambda ctx, name, title: ("<html>" * 1000, []))
    fill_the_disk_on_atomic_writes(monkeypatch)
    out = tmp_path / "report"
    out.mkdir()
    assert main(["report", str(tmp_path), "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: no space left on the disk of {out}") and AGAIN in line
    assert list(out.iterdir()) == []


@pytest.fixture
def reports(monkeypatch):
    """``ray.tune.report`` replaced by a list of what a trial reported."""
    tune = pytest.importorskip("ray.tune")
    reported: list[dict] = []
    monkeypatch.setattr(tune, "report", lambda metrics, **kw: reported.append(metrics))
    return reported


def test_a_trial_on_a_full_disk_is_a_clear_failed_trial_that_runs_again(tmp_path, monkeypatch, reports, tiny_dict):
    from mismatch.study.trials import trial_payload

    spec = worker.load_trial_spec(tiny_dict())

    def run_trial(spec, on_epoch_end, checkpoint_dir):
        (checkpoint_dir / "trial.pt").write_bytes(b"epoch 1")
        raise enospc()

    monkeypatch.setattr(worker, "run_trial", run_trial)
    config = {"trial": {"id": spec.trial_id(), "spec": trial_payload(spec)}}
    worker.trial_fn(config, storage=str(tmp_path), threads=1)  # returns: no EOFError, no traceback
    (report,) = reports
    assert report["status_failed"] == 1 and report[worker.DISK_FULL] == report["error"]
    assert report["error"].startswith(f"no space left on the disk of {tmp_path}/tiny/checkpoints/{spec.trial_id()}")
    assert store.trial_statuses(str(tmp_path), "tiny") == {}  # not failed for good: the next run retries it
    assert (tmp_path / "tiny" / "checkpoints" / spec.trial_id() / "trial.pt").read_bytes() == b"epoch 1"  # resumes


def test_the_driver_stops_the_run_and_ends_with_the_workers_line(tmp_path):
    pytest.importorskip("ray")
    stopper = runner.stop_on_full_disk()
    assert not stopper("a", {"epoch": 1}) and not stopper.stop_all()
    assert stopper("b", {worker.DISK_FULL: "no space left on the disk of /x"}) and stopper.stop_all()
    line = "no space left on the disk of /x: nothing finished was lost ..."
    grid = [SimpleNamespace(metrics={"status_failed": 1, worker.DISK_FULL: line}, error=None, config={}),
            SimpleNamespace(metrics={}, error=SimpleNamespace(cause=enospc()), config={})]
    full = runner._record_errored(grid, str(tmp_path))
    assert isinstance(full, DiskFullError) and str(full) == line
    raised = runner._record_errored(grid[1:], str(tmp_path))  # a worker's own ENOSPC, raised through Ray
    assert isinstance(raised, DiskFullError) and str(raised).startswith(f"no space left on the disk of {tmp_path}: ")
    assert list(tmp_path.iterdir()) == []  # no failed row for either trial


def test_study_run_on_a_full_disk_exits_1_with_one_line(tmp_path, monkeypatch, capsys):
    def full(study, **kwargs):
        raise DiskFullError(f"{tmp_path}/runs/s/images/t.parquet")

    monkeypatch.setattr(runner, "run_study", full)
    assert main(["study", "run", str(_study_file(tmp_path, tmp_path / "runs"))]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line == (f"error: no space left on the disk of {tmp_path}/runs/s/images/t.parquet: {NOTHING_LOST} and the "
                    "partial files were removed; free space there and run the same command again")
    assert os.listdir(tmp_path) == ["s.yaml"]
