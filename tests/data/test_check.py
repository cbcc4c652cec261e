"""`check_dataset`, `mismatch data check` and `prepare` on every kind of bad input.

Each broken case is written by the test; every problem must name its file, the checker
must list ALL of them, and `prepare` must leave nothing behind.
"""

from __future__ import annotations

import importlib.util
import re

import nibabel as nib
import numpy as np
import pytest

from mismatch.cli import main
from mismatch.data import DataCheckError, brats, carve14, check_dataset, prepare_dataset
from mismatch.data.msd import write_case, write_dataset_json
from mismatch.data.presets import data_spec_for

needs_sitk = pytest.mark.skipif(importlib.util.find_spec("SimpleITK") is None, reason="SimpleITK not installed")

SHAPE = (4, 8, 8)  # (S, H, W)
AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])


def _good(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 100, (1, *SHAPE)).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[:, 2:5, 2:5] = 1
    return image, label


def _nifti(path, volume, affine=AFFINE, dtype=np.float32):
    nib.save(nib.Nifti1Image(np.moveaxis(volume, 0, 2).astype(dtype), affine), path)  # (S, H, W) -> (H, W, S)


def _flip_bytes(path, where: float = 0.5, n: int = 16):
    data = bytearray(path.read_bytes())
    start = int(len(data) * where)
    data[start : start + n] = bytes(b ^ 0xFF for b in data[start : start + n])
    path.write_bytes(bytes(data))


def _broken_msd(root):
    """Two good cases and one case per kind of problem; returns {case: (file, message regex)}."""
    for i, case in enumerate(["ok_0", "ok_1", "gz", "trunc", "shape", "seven", "nan", "nolabel", "affine",
                              "empty", "half"]):
        write_case(root, case, *_good(i), AFFINE)
    write_dataset_json(root, name="t", channel_names=["CT"], labels={"background": 0, "vessel": 1}, num_training=11)
    img, lab = root / "imagesTr", root / "labelsTr"
    _flip_bytes(img / "gz_0000.nii.gz")  # a corrupted gzip stream (caught by its CRC)
    (img / "trunc_0000.nii.gz").write_bytes((img / "trunc_0000.nii.gz").read_bytes()[:200])  # truncated download
    _nifti(lab / "shape.nii.gz", np.zeros((3, 8, 8)), dtype=np.uint8)
    seven = _good(0)[1]
    seven[0, 0, 0] = 7
    _nifti(lab / "seven.nii.gz", seven, dtype=np.uint8)  # labels {0, 1, 7}
    nan = _good(0)[0]
    nan[0, 1, 2, 3] = np.nan
    nan[0, 2, 2, 3] = np.inf
    _nifti(img / "nan_0000.nii.gz", nan[0])
    (lab / "nolabel.nii.gz").unlink()
    _nifti(lab / "affine.nii.gz", _good(0)[1], affine=np.diag([1.0, 1.0, 2.0, 1.0]), dtype=np.uint8)
    _nifti(lab / "empty.nii.gz", np.zeros(SHAPE), dtype=np.uint8)
    _nifti(lab / "half.nii.gz", _good(0)[1] * 0.5)
    _nifti(img / "ok_1_0001.nii.gz", _good(0)[0][0])  # a channel dataset.json does not declare
    return {
        "gz": ("imagesTr/gz_0000.nii.gz", r"cannot read image channel file \(corrupt or truncated\?\): CRC check"),
        "trunc": ("imagesTr/trunc_0000.nii.gz", r"cannot read image channel file \(corrupt or truncated\?\)"),
        "shape": ("labelsTr/shape.nii.gz", r"label shape \(8, 8, 3\) differs from image shape \(8, 8, 4\)"),
        "seven": ("labelsTr/seven.nii.gz", r"unexpected label values \[7\] \(expected a subset of \[0, 1\]\)"),
        "nan": ("imagesTr/nan_0000.nii.gz", r"2 NaN or infinite intensities"),
        "nolabel": ("labelsTr/nolabel.nii.gz", r"missing label file"),
        "affine": ("labelsTr/affine.nii.gz", r"label affine differs from image affine"),
        "empty": ("labelsTr/empty.nii.gz", r"empty label: no foreground voxel \(labels \[1\]\)"),
        "half": ("labelsTr/half.nii.gz", r"label values must be integers, found e\.g\. 0\.5"),
        None: ("imagesTr/ok_1_0001.nii.gz", r"channel 1 is not declared in dataset\.json"),
    }


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    return root, _broken_msd(root)


def test_every_problem_is_listed_with_its_file(broken):
    root, expected = broken
    report = check_dataset("msd", root, foreground_labels=[1])
    assert not report.ok and len(report.cases) == 11
    assert len(report.problems) == len(expected), "\n".join(map(str, report.problems))
    for case, (rel, message) in expected.items():
        (problem,) = [p for p in report.problems if p.case == case and p.path == root / rel]
        assert re.search(message, problem.message), str(problem)
        assert str(problem).startswith(f"{root / rel}: ")
    assert report.bad_cases() == sorted(c for c in expected if c is not None)


def test_prepare_refuses_and_leaves_nothing_behind(broken, tmp_path):
    root, expected = broken
    out = tmp_path / "prepared"
    with pytest.raises(DataCheckError) as err:
        prepare_dataset(data_spec_for("msd", root, "msd"), out)
    assert len(err.value.problems) == len(expected)
    assert "gz_0000.nii.gz" in str(err.value) and "nolabel.nii.gz" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # neither the cache nor its temporary sibling


def test_check_cli_prints_one_problem_per_line_and_exits_1(broken, capsys):
    root, expected = broken
    assert main(["data", "check", "msd", str(root)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(expected)
    assert any(line.startswith(f"{root / 'labelsTr' / 'seven.nii.gz'}: unexpected label values [7]") for line in lines)


def test_prepare_cli_exits_1_and_writes_nothing(broken, tmp_path, capsys):
    root, _ = broken
    assert main(["data", "prepare", "msd", str(root), str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "nothing was written" in err and str(root / "imagesTr" / "nan_0000.nii.gz") in err
    assert list(tmp_path.iterdir()) == []


def test_a_clean_dataset_passes(tmp_path, capsys):
    for i in range(2):
        write_case(tmp_path, f"c{i}", *_good(i), AFFINE)
    write_dataset_json(tmp_path, name="t", channel_names=["CT"], labels={"background": 0, "x": 1}, num_training=2)
    assert check_dataset("msd", tmp_path).ok
    assert main(["data", "check", "msd", str(tmp_path)]) == 0
    assert "ok: 2 msd cases" in capsys.readouterr().out


def test_missing_folder_and_dataset_json(tmp_path):
    problems = check_dataset("msd", tmp_path / "nope").problems
    assert [str(p) for p in problems] == [f"{tmp_path / 'nope'}: dataset folder not found"]
    (problem,) = check_dataset("msd", tmp_path).problems
    assert problem.path == tmp_path / "dataset.json" and problem.message == "dataset.json not found"


@needs_sitk
def test_carve14_truncated_raw_unpaired_and_missing_files(tmp_path):
    for i, case in enumerate(["ok", "short", "noraw", "orphan", "nolabel"]):
        image, label = _good(i)
        carve14.write_case(tmp_path, case, image[0] - 500, label)
    raw = tmp_path / "images" / "short.raw"
    raw.write_bytes(raw.read_bytes()[:100])  # truncated data file
    (tmp_path / "labels" / "noraw.raw").unlink()
    (tmp_path / "images" / "orphan.mhd").unlink()  # its .raw is left unpaired
    (tmp_path / "labels" / "nolabel.mhd").unlink()
    (tmp_path / "labels" / "nolabel.raw").unlink()
    problems = {(p.path.relative_to(tmp_path).as_posix(), p.message) for p in check_dataset("carve14", tmp_path).problems}
    assert problems == {
        ("images/short.raw", "truncated image channel data file: 100 bytes, header short.mhd needs 512"),
        ("labels/noraw.raw", "missing data file of label file noraw.mhd"),
        ("images/orphan.raw", "data file without a .mhd header naming it (unpaired file)"),
        ("images/orphan.mhd", "missing image channel file"),
        ("labels/nolabel.mhd", "missing label file"),
    }


def test_brats_missing_modality_and_unexpected_label(tmp_path):
    for i, case in enumerate(["b0", "b1"]):
        image, label = _good(i)
        brats.write_case(tmp_path, case, np.repeat(image, 4, axis=0), label * 4, AFFINE)
    (tmp_path / "b0" / "b0_t1ce.nii.gz").unlink()
    _nifti(tmp_path / "b1" / "b1_seg.nii.gz", _good(0)[1] * 3, dtype=np.uint8)  # 3 is not a BRATS 2018 label
    problems = [(p.path.relative_to(tmp_path).as_posix(), p.message)
                for p in check_dataset("brats2018", tmp_path, foreground_labels=[1, 2, 4]).problems]
    assert problems == [
        ("b0/b0_t1ce.nii.gz", "missing image channel file"),
        ("b1/b1_seg.nii.gz", "unexpected label values [3] (expected a subset of [0, 1, 2, 4])"),
    ]
