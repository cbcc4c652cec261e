"""The MSD / nnU-Net raw reader: round trip, axis order, and errors that name the file."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from mismatch.data import DataError, get_layout, list_cases, load_case, read_dataset_json
from mismatch.data.msd import write_case, write_dataset_json


def _write(root, cases=("a", "b"), channels=("t1", "t2"), shape=(3, 5, 6)):
    """Cases with image[c, s, h, w] = 1000c + 100s + 10h + w and label = s % 3."""
    c = np.arange(len(channels))[:, None, None, None]
    s, h, w = np.indices(shape)
    image = (1000 * c + 100 * s + 10 * h + w).astype(np.float32)
    label = (s % 3).astype(np.uint8)
    for case in cases:
        write_case(root, case, image, label, np.diag([0.5, 0.5, 2.0, 1.0]))
    write_dataset_json(root, name="t", channel_names=channels, labels={"background": 0, "x": 1, "y": 2}, num_training=len(cases))
    return image, label


@pytest.fixture
def root(tmp_path):
    _write(tmp_path)
    return tmp_path


def test_round_trip_keeps_values_and_puts_slices_first(tmp_path):
    image, label = _write(tmp_path)
    case = load_case(tmp_path, "a")
    assert case.image.dtype == np.float32 and case.image.shape == (2, 3, 5, 6)  # (C, S, H, W)
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.label, label)
    assert case.label.dtype == np.uint8 and case.channel_names == ("t1", "t2")
    assert nib.load(tmp_path / "imagesTr" / "a_0001.nii.gz").shape == (5, 6, 3)  # (H, W, S) on disk
    np.testing.assert_allclose(case.affine, np.diag([0.5, 0.5, 2.0, 1.0]))


def test_list_cases_is_sorted_and_includes_cases_without_labels(root):
    shutil.copy(root / "imagesTr" / "a_0000.nii.gz", root / "imagesTr" / "0c_0000.nii.gz")
    assert list_cases(root) == ["0c", "a", "b"]
    assert get_layout("msd").list_cases(root) == ["0c", "a", "b"]


def test_dataset_json_forms(tmp_path):
    meta = {"modality": {"1": "T2", "0": "T1"}, "labels": {"0": "background", "1": "tumour"}, "numTraining": 1}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    info = read_dataset_json(tmp_path)
    assert info.channel_names == ("T1", "T2") and info.labels == {"background": 0, "tumour": 1}
    assert info.file_ending == ".nii.gz"


@pytest.mark.parametrize(
    "content, message",
    [(None, "dataset.json not found"), ("{", "cannot read"), ('{"labels": {}}', "channel_names")],
)
def test_bad_dataset_json_names_the_file(tmp_path, content, message):
    if content is not None:
        (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(DataError, match=message) as err:
        read_dataset_json(tmp_path)
    assert str(tmp_path / "dataset.json") in str(err.value)


def test_missing_label_file_is_named(root):
    (root / "labelsTr" / "b.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr/b\.nii\.gz: missing label file"):
        load_case(root, "b")


def test_missing_channel_file_is_named(root):
    (root / "imagesTr" / "a_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"imagesTr/a_0001\.nii\.gz: missing image channel file"):
        load_case(root, "a")


def test_label_shape_mismatch_is_named(root):
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 4), np.uint8), np.eye(4)), root / "labelsTr" / "a.nii.gz")
    with pytest.raises(DataError, match=r"labelsTr/a\.nii\.gz: label shape \(5, 6, 4\) differs from image shape \(5, 6, 3\)"):
        load_case(root, "a")


def test_channel_shape_mismatch_is_named(root):
    nib.save(nib.Nifti1Image(np.zeros((5, 7, 3), np.float32), np.eye(4)), root / "imagesTr" / "a_0001.nii.gz")
    with pytest.raises(DataError, match=r"imagesTr/a_0001\.nii\.gz: shape \(5, 7, 3\) differs from a_0000"):
        load_case(root, "a")


def test_unreadable_file_is_named(root):
    path = root / "imagesTr" / "b_0000.nii.gz"
    path.write_bytes(path.read_bytes()[:60])  # truncated download
    with pytest.raises(DataError, match=r"imagesTr/b_0000\.nii\.gz: cannot read image channel file \(corrupt or truncated\?\)"):
        load_case(root, "b")


def test_non_integer_labels_are_refused(root):
    nib.save(nib.Nifti1Image(np.full((5, 6, 3), 0.5, np.float32), np.diag([0.5, 0.5, 2.0, 1.0])), root / "labelsTr" / "a.nii.gz")
    with pytest.raises(DataError, match="label values must be integers"):
        load_case(root, "a")


def test_unknown_layout_lists_known_ones():
    known = "acdc-h5, brats2018, carve14, la2018-h5, msd"
    with pytest.raises(DataError, match=rf"unknown layout 'carve' \(did you mean 'carve14'\?\); known: {known}"):
        get_layout("carve")
