"""Voxel spacing from the image header, in (S, H, W) order, carried into a trial's test-case geometry."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mismatch.config import DataSpec, ProtocolSpec
from mismatch.data import carve14, get_layout, load_trial_data, prepare_dataset, write_synthetic_dataset
from mismatch.data.msd import write_case, write_dataset_json
from mismatch.data.presets import data_spec_for
from mismatch.data.synth import make_phantom
from mismatch.data.volumes import affine_spacing

needs_sitk = pytest.mark.skipif(importlib.util.find_spec("SimpleITK") is None, reason="SimpleITK not installed")
SHAPE = (3, 5, 6)  # (S, H, W)


def _case_arrays() -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros(SHAPE, np.uint8)
    label[1, 2:4, 2:5] = 1
    return np.random.default_rng(0).normal(size=(1, *SHAPE)).astype(np.float32), label


def test_nifti_spacing_follows_the_stored_axes(tmp_path):
    """NIfTI stores (H, W, S): affine columns 0, 1, 2 step along H, W, S."""
    image, label = _case_arrays()
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, :3] = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]]) @ affine[:3, :3]  # a rotation keeps lengths
    write_case(tmp_path, "c_000", image, label, affine)
    write_dataset_json(tmp_path, name="t", channel_names=("CT",), labels={"background": 0, "fg": 1}, num_training=1)
    layout = get_layout("msd")
    case = layout.load_case(tmp_path, "c_000")
    assert case.spacing == pytest.approx((2.5, 0.8, 0.9))
    label_back, spacing = layout.load_label_spacing(tmp_path, "c_000")
    assert spacing == pytest.approx((2.5, 0.8, 0.9)) and label_back.shape == SHAPE


@needs_sitk
def test_metaimage_spacing_is_reversed_from_x_y_z(tmp_path):
    image, label = _case_arrays()
    carve14.write_case(tmp_path, "scan", image[0] * 100, label, spacing=(0.6, 0.7, 1.25))  # (x, y, z)
    case = get_layout("carve14").load_case(tmp_path, "scan")
    assert case.spacing == pytest.approx((1.25, 0.7, 0.6))  # (S, H, W) = (z, y, x)


def test_affine_spacing_is_the_length_of_each_column():
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 3.0, 4.0]  # length 5
    assert affine_spacing(affine, (0, 1, 2)) == (5.0, 1.0, 1.0)
    assert affine_spacing(affine, (2, 1, 0)) == (1.0, 1.0, 5.0)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("raw") / "vessels", "vessels", 5, (36, 42), 8, seed=0)


def test_test_cases_carry_their_grid_and_header_spacing_raw_and_prepared(raw, tmp_path):
    protocol = ProtocolSpec(labelled_cases=1, unlabelled_cases=2, validation_cases=1, test_cases=1, labelled_slices=3)
    spec = data_spec_for("msd", raw, "msd", {"min_foreground": 5, "crop": "corners", "crop_size": 16})
    from_raw = load_trial_data(spec, protocol)
    result = prepare_dataset(spec, tmp_path / "p")
    from_cache = load_trial_data(DataSpec(**result.study_data), protocol)
    (case,) = from_raw.splits["test"]
    _, _, affine = make_phantom("vessels", (36, 42), 8, 0, int(case.rsplit("_", 1)[1]))
    expected = (affine[2, 2], affine[0, 0], affine[1, 1])  # phantom NIfTI axes (H, W, S)
    assert list(from_raw.geometry) == [case] == list(from_cache.geometry)
    assert from_raw.geometry[case].shape == (8, 36, 42)
    assert from_raw.geometry[case].spacing == pytest.approx(expected)
    assert from_cache.geometry == from_raw.geometry
