"""A corrupt (truncated) Parquet file in a study's store: named by every reader, quarantined by
``study run``, counted pending by ``study status``, left out of the report with a warning."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
import yaml

from mismatch.study.store import (
    CorruptFileError,
    corrupt_files,
    export_images,
    quarantine,
    read_table,
    resolve,
    trial_statuses,
    write_trial,
)


def _trial(tid: str, status: str = "completed", **extra) -> dict:
    return {"trial_id": tid, "status": status, "method": "mismatch", "train_time_s": 2.0, **extra}


def _images(tid: str, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"trial_id": [tid] * n, "iou": np.linspace(0, 1, n), "case_id": [f"c{i}" for i in range(n)]})


def _truncate(storage: str, relative: str) -> str:
    """Cut a stored file to half its length, as a crash or a full disk could; returns its path."""
    fs, root = resolve(storage)
    path = f"{root}/{relative}"
    with fs.open_input_stream(path) as handle:
        payload = handle.read()
    with fs.open_output_stream(path) as handle:
        handle.write(payload[: len(payload) // 2])
    return path


def _exists(storage: str, path: str) -> bool:
    fs, _ = resolve(storage)
    return fs.get_file_info(path).type == pafs.FileType.File


@pytest.fixture(params=["local", "memory"])
def storage(request, tmp_path) -> str:
    return str(tmp_path / "store") if request.param == "local" else f"memory://mm-{uuid.uuid4().hex}/results"


def test_every_reader_names_the_corrupt_file(storage, tmp_path):
    for tid in ("a", "b"):
        write_trial(storage, "s", tid, _trial(tid), _images(tid))
    images = _truncate(storage, "s/images/b.parquet")
    trials = _truncate(storage, "s/trials/a.parquet")
    with pytest.raises(CorruptFileError, match="magic bytes") as err:
        trial_statuses(storage, "s")
    assert err.value.path == trials and trials in str(err.value)
    with pytest.raises(CorruptFileError) as err:
        read_table(storage, "s", "images", columns=["trial_id", "iou"])
    assert err.value.path == images and images in str(err.value)
    with pytest.raises(CorruptFileError, match="b.parquet"):
        export_images(storage, "s", str(tmp_path / "merged.parquet"))
    assert not (tmp_path / "merged.parquet").exists()
    # skipping leaves out exactly the corrupt files
    assert list(read_table(storage, "s", "images", skip_corrupt=True)["trial_id"].unique()) == ["a"]
    found = corrupt_files(storage, "s")
    assert [(c.table, c.path, c.trial_id) for c in found] == [("trials", trials, "a"), ("images", images, "b")]
    assert all("magic bytes" in c.error and c.path not in c.error for c in found)


def test_quarantine_moves_the_file_and_its_trials_row(storage):
    for tid in ("a", "b", "c"):
        write_trial(storage, "s", tid, _trial(tid), _images(tid))
    _, root = resolve(storage)
    images_b = _truncate(storage, "s/images/b.parquet")
    trials_c = _truncate(storage, "s/trials/c.parquet")
    moves = dict(quarantine(storage, "s", corrupt_files(storage, "s")))
    base = f"{root}/s"
    assert moves == {images_b: f"{base}/quarantine/images/b.parquet",
                     f"{base}/trials/b.parquet": f"{base}/quarantine/trials/b.parquet",  # commit marker goes too
                     trials_c: f"{base}/quarantine/trials/c.parquet"}
    assert all(_exists(storage, target) and not _exists(storage, source) for source, target in moves.items())
    assert corrupt_files(storage, "s") == []
    assert trial_statuses(storage, "s") == {"a": "completed"}  # b and c are not done: they run again
    # the same file corrupt again after a re-run: the earlier quarantined copy is kept
    write_trial(storage, "s", "c", _trial("c"), _images("c"))
    _truncate(storage, "s/trials/c.parquet")
    again = dict(quarantine(storage, "s", corrupt_files(storage, "s")))
    assert again == {trials_c: f"{base}/quarantine/trials/c.parquet.1"}
    assert _exists(storage, f"{base}/quarantine/trials/c.parquet")


STUDY = {
    "name": "corrupt",
    "base": {"data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10, "seed": 0}},
             "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2},
             "train": {"epochs": 1}},
    "methods": [{"name": "sup1", "width": 4}],
    "grid": {"labelled_slices": [2], "fold": [0, 1, 2], "seed": [0]},
    "resources": {"cpu": 1},
}


def test_status_counts_a_corrupt_trial_pending_and_run_quarantines_it(tmp_path, capsys):
    from mismatch.cli import main
    from mismatch.study.runner import pending_trials, quarantine_corrupt
    from mismatch.study.trials import load_study

    file = tmp_path / "study.yaml"
    file.write_text(yaml.safe_dump({**STUDY, "storage": str(tmp_path / "runs")}))
    study = load_study(file)
    ids = [s.trial_id() for s in study.trials()]
    for tid in ids:
        write_trial(study.storage, study.name, tid, _trial(tid), _images(tid))
    broken = _truncate(study.storage, f"{study.name}/images/{ids[1]}.parquet")

    assert main(["study", "status", str(file)]) == 0
    out = capsys.readouterr().out
    assert "3 trials: 2 done, 0 running, 0 failed, 1 pending" in out
    assert f"corrupt {broken}: Parquet magic bytes not found" in out and ids[1] in out

    moves = quarantine_corrupt(study, study.storage)
    lines = capsys.readouterr().out.splitlines()
    assert len(moves) == 2 and len(lines) == 2 and broken in lines[0] and "quarantine" in lines[0]
    todo, statuses = pending_trials(study, study.storage, retry_failed=False)
    assert [s.trial_id() for s in todo] == [ids[1]] and set(statuses) == {ids[0], ids[2]}
    assert (Path(study.storage) / study.name / "quarantine" / "images" / f"{ids[1]}.parquet").exists()


def test_report_leaves_out_a_corrupt_file_with_a_warning(tmp_path, capsys):
    from mismatch.report import build_report
    from tests.synthetic_study import SyntheticGrid, write_synthetic_study

    grid = SyntheticGrid((("sup1", "unet", float("nan")), ("mismatch", "mm", 0.002)), counts=(5, 10),
                         replicates=(0, 1), images_per_trial=3)
    base = write_synthetic_study(tmp_path / "runs", grid)
    images = sorted((base / "images").glob("*.parquet"))
    trials = sorted((base / "trials").glob("*.parquet"))
    broken = [str(_truncate(str(images[0].parent), images[0].name)),
              str(_truncate(str(trials[-1].parent), trials[-1].name))]
    html = build_report(base, tmp_path / "out").read_text()
    err = capsys.readouterr().err
    for path in broken:
        assert f"warning: left out a corrupt results file {path}: " in err
        assert html.count(path) >= 2  # the overview's warning and the details under What is missing
    assert '<p class="warn">2 corrupt results files were left out' in html


# End to end on an embedded Ray (run, truncate one images file, run again): folded into
# tests/study/test_study_e2e.py::test_run_skip_add_and_fail_for_good, one real-Ray run for both.
