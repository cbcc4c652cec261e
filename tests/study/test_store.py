"""The results store on a local path and through a non-local filesystem (fsspec memory://)."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest

from mismatch.study.store import TrialCheckpoint, export_images, read_table, resolve, trial_statuses, write_trial


def _trial(tid: str, status: str = "completed", **extra) -> dict:
    return {"trial_id": tid, "status": status, "method": "mismatch", **extra}


def _images(tid: str, n: int) -> pd.DataFrame:
    return pd.DataFrame({"trial_id": [tid] * n, "iou": np.linspace(0, 1, n), "case_id": [f"c{i}" for i in range(n)]})


@pytest.fixture(params=["local", "memory"])
def storage(request, tmp_path) -> str:
    return str(tmp_path / "store") if request.param == "local" else f"memory://mm-{uuid.uuid4().hex}/results"


def test_round_trip_status_and_export(storage, tmp_path):
    write_trial(storage, "s", "a", _trial("a", train_time_s=1.5), _images("a", 3), predictions={"prob": np.ones((1, 2, 2))})
    write_trial(storage, "s", "b", _trial("b", "failed", error="boom"))
    write_trial(storage, "s", "a", _trial("a", train_time_s=2.5), _images("a", 3))  # same id: replaced, not added
    assert trial_statuses(storage, "s") == {"a": "completed", "b": "failed"}
    rows = read_table(storage, "s", "trials", columns=["trial_id", "train_time_s", "error"])
    assert rows.set_index("trial_id").loc["a", "train_time_s"] == 2.5
    assert rows.set_index("trial_id").loc["b", "error"] == "boom"  # columns missing in one file become null
    assert len(read_table(storage, "s", "images")) == 3
    out = f"{storage}/merged.parquet"
    assert export_images(storage, "s", out) == 3
    fs, path = resolve(out)
    with fs.open_input_file(path) as handle:
        assert len(pd.read_parquet(handle)) == 3
    fs, root = resolve(storage)
    names = [i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))]
    assert not [n for n in names if n.endswith(".tmp")]


def test_checkpoint_goes_up_and_comes_back_on_a_remote_filesystem(tmp_path):
    storage = f"memory://mm-{uuid.uuid4().hex}/results"
    first = TrialCheckpoint(storage, "s", "t1", scratch=str(tmp_path / "node1"))
    assert not first.is_local and not first.exists()
    local = first.fetch()
    (tmp_path / "node1" / "mismatch-ckpt-t1" / "trial.pt").write_bytes(b"epoch-3")
    assert local.endswith("mismatch-ckpt-t1")
    first.push()
    assert first.exists()
    # another node (another scratch folder) continues from the uploaded checkpoint
    second = TrialCheckpoint(storage, "s", "t1", scratch=str(tmp_path / "node2"))
    folder = second.fetch()
    assert (tmp_path / "node2" / "mismatch-ckpt-t1" / "trial.pt").read_bytes() == b"epoch-3" and folder
    second.delete()
    assert not second.exists() and not (tmp_path / "node2" / "mismatch-ckpt-t1").exists()


def test_read_of_an_unwritten_study_is_empty(storage):
    assert read_table(storage, "nothing", "trials").empty
    with pytest.raises(ValueError, match="unknown table"):
        read_table(storage, "s", "tables")


def test_a_failed_write_or_export_leaves_no_temporary_file(storage, tmp_path):
    from mismatch.study.store import _write_atomic

    fs, root = resolve(storage)
    with pytest.raises(TypeError):
        _write_atomic(fs, f"{root}/s/x.bin", None)  # fails while writing, after the .tmp file was opened
    assert [i.path for i in fs.get_file_info(pafs.FileSelector(f"{root}/s"))] == []
    write_trial(storage, "s", "a", _trial("a"), _images("a", 2))
    blocked = tmp_path / "export"
    (blocked / "sub").mkdir(parents=True)  # a folder where the export file should go: the move fails
    with pytest.raises(OSError):
        export_images(storage, "s", str(blocked))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"] + (["store"] if "://" not in storage else [])
