"""Faults from the fault-injection pass (issue 12): forged NIfTI headers, a wrong ``numTraining``
and the temporary folders a killed ``data prepare`` leaves behind."""

from __future__ import annotations

import gzip
import os
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from mismatch.cli import main
from mismatch.data import DataCheckError, check_dataset, prepare_dataset
from mismatch.data.errors import FileProblemError
from mismatch.data.msd import write_case, write_dataset_json
from mismatch.data.presets import data_spec_for
from mismatch.data.volumes import read_volume

SHAPE = (4, 8, 8)  # (S, H, W)
HUGE = (30000, 30000, 30000)


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, np.uint8)
    label[:, 2:5, 2:5] = 1
    return rng.normal(0, 100, (1, *SHAPE)).astype(np.float32), label


def _forge_shape(path, shape, keep_data: bool = True) -> None:
    """Rewrite the dims of a NIfTI file's header, keeping its (small) data or dropping it."""
    gz = path.name.endswith(".gz")
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    header = nib.Nifti1Header(raw[:348])
    header.set_data_shape(shape)
    forged = header.binaryblock + (raw[348:] if keep_data else raw[348:352])
    path.write_bytes(gzip.compress(forged) if gz else forged)


def _msd(root, cases=("bad", "good"), num_training=None):
    for i, case in enumerate(cases):
        write_case(root, case, *_case(i), np.eye(4))
    write_dataset_json(root, name="t", channel_names=["CT"], labels={"background": 0, "fg": 1},
                       num_training=len(cases) if num_training is None else num_training)
    return root


@pytest.fixture
def forged(tmp_path):
    root = _msd(tmp_path / "raw")
    bad = root / "imagesTr" / "bad_0000.nii.gz"
    _forge_shape(bad, HUGE, keep_data=False)
    assert bad.stat().st_size < 200  # the 92-byte file claiming 30000^3 voxels
    return root, bad


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_a_forged_shape_is_a_file_problem_not_a_memory_error(tmp_path, ending):
    path = tmp_path / f"v{ending}"
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4), np.float32), np.eye(4)), path)
    _forge_shape(path, (1000, 1000, 1000))
    tracemalloc.start()
    try:
        with pytest.raises(FileProblemError) as err:
            read_volume(path, "image channel")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.path == path
    assert "header claims 1000x1000x1000 float32 voxels (4000000352 bytes)" in err.value.problem
    assert "\n" not in str(err.value)
    assert peak < 20 * 2**20  # nothing near the 4 GB the header asks for was allocated


def test_check_reports_the_forged_file_in_one_line_and_checks_the_other_cases(forged, capsys):
    root, bad = forged
    report = check_dataset("msd", root)
    assert report.cases == ["bad", "good"]
    assert [(p.path, p.case) for p in report.problems] == [(bad, "bad")]
    assert "30000x30000x30000" in report.problems[0].message
    assert main(["data", "check", "msd", str(root)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{bad}: truncated image channel file or forged header")


def test_prepare_names_the_forged_file_and_writes_nothing(forged, tmp_path):
    root, bad = forged
    with pytest.raises(DataCheckError) as err:
        prepare_dataset(data_spec_for("msd", root), tmp_path / "prepared")
    assert [p.path for p in err.value.problems] == [bad]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_a_gzip_file_is_still_read_to_its_end(tmp_path):
    """Only the header-implied bytes are kept, but the stream is read through: a damaged CRC
    after the voxel data is still caught, and a good file reads back exactly."""
    path = tmp_path / "v.nii.gz"
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    np.testing.assert_array_equal(read_volume(path).data[0], np.moveaxis(data, 2, 0))
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # the CRC32 in gzip's trailer
    path.write_bytes(bytes(raw))
    with pytest.raises(FileProblemError, match="CRC check failed"):
        read_volume(path)


def test_num_training_mismatch_is_reported_with_both_numbers(tmp_path):
    root = _msd(tmp_path, cases=("a", "b", "c"), num_training=5)
    report = check_dataset("msd", root)
    assert [str(p) for p in report.problems] == [
        f"{root / 'dataset.json'}: numTraining is 5 but 3 training cases were found in imagesTr/ and labelsTr/"
    ]
    assert check_dataset("msd", _msd(tmp_path / "ok", cases=("a", "b"))).ok


def test_num_training_must_be_an_integer(tmp_path):
    root = _msd(tmp_path, cases=("a",), num_training="one")
    (problem,) = check_dataset("msd", root).problems
    assert problem.path == root / "dataset.json" and problem.message == "numTraining must be an integer, got 'one'"


def test_prepare_removes_folders_a_killed_prepare_left(tmp_path, capsys):
    root = _msd(tmp_path / "raw", cases=("a", "b"))
    out = tmp_path / "prepared"
    old_style = tmp_path / ".prepared.tmp-0123456789ab"
    dead = tmp_path / f".prepared.tmp-{2**22 + 12345}-0123456789ab"  # above Linux's pid_max default
    live = tmp_path / f".prepared.tmp-{os.getpid()}-0123456789ab"  # a run still writing it
    other = tmp_path / ".other.tmp-0123456789ab"
    for folder in (old_style, dead, live, other):
        folder.mkdir()
        (folder / "x.npy").write_bytes(b"partial")
    assert main(["data", "prepare", "msd", str(root), str(out), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert f"removed {old_style}: left by an earlier prepare that was killed" in stdout
    assert f"removed {dead}:" in stdout
    assert not old_style.exists() and not dead.exists()
    assert live.exists() and other.exists() and (out / "manifest.json").is_file()
