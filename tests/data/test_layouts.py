"""Each layout: small volumes written in its own format by the test, read back and compared."""

from __future__ import annotations

import importlib.util
import json
import sys

import nibabel as nib
import numpy as np
import pytest

from mismatch.data import DataError, brats, carve14, check_dataset, get_layout, list_layouts, read_volume
from mismatch.data.msd import write_case, write_dataset_json

needs_sitk = pytest.mark.skipif(importlib.util.find_spec("SimpleITK") is None, reason="SimpleITK not installed")
SHAPE = (3, 5, 6)  # (S, H, W)


def _ramp(channels: int = 1) -> np.ndarray:
    """image[c, s, h, w] = 1000c + 100s + 10h + w: every voxel tells where it came from."""
    c = np.arange(channels)[:, None, None, None]
    s, h, w = np.indices(SHAPE)
    return (1000 * c + 100 * s + 10 * h + w).astype(np.float32)


def _labels() -> np.ndarray:
    return (np.indices(SHAPE)[0] % 3).astype(np.uint8)  # slice s has label s % 3


def test_builtin_layouts_are_registered():
    assert list_layouts() == ["acdc-h5", "brats2018", "carve14", "la2018-h5", "msd"]


@needs_sitk
def test_carve14_round_trip_through_simpleitk(tmp_path):
    image, label = _ramp()[0] - 1000, _labels()
    files = carve14.write_case(tmp_path, "scan_a", image, label, spacing=(0.6, 0.7, 1.0))
    assert sorted(p.name for p in files) == ["scan_a.mhd", "scan_a.mhd", "scan_a.raw", "scan_a.raw"]
    layout = get_layout("carve14")
    assert layout.list_cases(tmp_path) == ["scan_a"]
    case = layout.load_case(tmp_path, "scan_a")
    assert case.image.shape == (1, *SHAPE) and case.image.dtype == np.float32  # (C, S, H, W) = (1, z, y, x)
    np.testing.assert_array_equal(case.image[0], image)
    np.testing.assert_array_equal(case.label, label)
    np.testing.assert_allclose(np.diag(case.affine)[:3], [0.6, 0.7, 1.0])
    assert case.channel_names == ("CT",)
    rels = [p.relative_to(tmp_path).as_posix() for p in layout.files(tmp_path, "scan_a")]
    assert rels == ["images/scan_a.mhd", "images/scan_a.raw", "labels/scan_a.mhd", "labels/scan_a.raw"]


@needs_sitk
def test_carve14_reads_compressed_metaimage(tmp_path):
    carve14.write_case(tmp_path, "z", _ramp()[0], _labels(), compress=True)
    assert (tmp_path / "images" / "z.zraw").is_file()
    np.testing.assert_array_equal(get_layout("carve14").load_case(tmp_path, "z").image[0], _ramp()[0])


@needs_sitk
def test_metaimage_without_simpleitk_names_the_extra(tmp_path, monkeypatch):
    carve14.write_case(tmp_path, "a", _ramp()[0], _labels())
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import SimpleITK -> ImportError
    with pytest.raises(DataError, match=r"images/a\.mhd: reading MetaImage .*pip install 'mismatch\[carve\]'"):
        read_volume(tmp_path / "images" / "a.mhd", "image channel")
    (problem,) = check_dataset("carve14", tmp_path).problems  # one clear problem, not one per file
    assert problem.path == tmp_path and "pip install 'mismatch[carve]'" in problem.message


def test_brats2018_round_trip(tmp_path):
    image, label = _ramp(4), np.where(_labels() == 2, 4, _labels()).astype(np.uint8)  # values {0, 1, 4}
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    brats.write_case(tmp_path, "Brats18_X_1", image, label, affine)
    names = sorted(p.name for p in (tmp_path / "Brats18_X_1").iterdir())
    assert names == [f"Brats18_X_1_{m}.nii.gz" for m in ("flair", "seg", "t1", "t1ce", "t2")]
    layout = get_layout("brats2018")
    assert layout.list_cases(tmp_path) == ["Brats18_X_1"]
    case = layout.load_case(tmp_path, "Brats18_X_1")
    assert case.channel_names == ("t1", "t1ce", "t2", "flair")
    np.testing.assert_array_equal(case.image, image)  # channel c is modality c
    np.testing.assert_array_equal(case.label, label)
    assert nib.load(tmp_path / "Brats18_X_1" / "Brats18_X_1_t2.nii.gz").shape == (5, 6, 3)  # (H, W, S) on disk


def test_brats2018_root_must_be_the_grade_folder(tmp_path):
    (tmp_path / "HGG").mkdir()
    (tmp_path / "LGG").mkdir()
    with pytest.raises(DataError, match=r"HGG and LGG folders: give the folder of the cases, e\.g\. .*HGG"):
        get_layout("brats2018").list_cases(tmp_path)


def test_msd_download_with_one_4d_file_per_case(tmp_path):
    """The MSD downloads store every channel of a case in one 4D file, without _0000."""
    image, label = _ramp(2), _labels()
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.moveaxis(image, (0, 1), (3, 2)), affine), tmp_path / "imagesTr" / "prostate_00.nii.gz")
    nib.save(nib.Nifti1Image(np.moveaxis(label, 0, 2), affine), tmp_path / "labelsTr" / "prostate_00.nii.gz")
    (tmp_path / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"macOS resource fork")  # ignored
    meta = {"modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "PZ", "2": "TZ"}}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    layout = get_layout("msd")
    assert layout.list_cases(tmp_path) == ["prostate_00"]
    case = layout.load_case(tmp_path, "prostate_00")
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.label, label)


def test_msd_channel_files_and_region_labels(tmp_path):
    image, label = _ramp(2), _labels()
    write_case(tmp_path, "a", image, label, np.eye(4))
    write_dataset_json(tmp_path, name="t", channel_names=("t1", "t2"), labels={"background": 0, "whole": [1, 2]},
                       num_training=1)
    case = get_layout("msd").load_case(tmp_path, "a")
    np.testing.assert_array_equal(case.image, image)
    assert get_layout("msd").label_values(tmp_path) == (0, 1, 2)
