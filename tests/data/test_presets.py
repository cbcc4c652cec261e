"""The paper's presets: spec expansion, and each preparation step on known arrays.

The CARVE and BRATS recipes run on small volumes written in their own layouts, whose
right answers are known slice by slice; raw and prepared loading must agree.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mismatch.config import DATA_PRESETS, DataSpec, ProtocolSpec, TrialSpec, load_trial_spec
from mismatch.data import brats, carve14, load_trial_data, make_splits, prepare_dataset
from mismatch.data.presets import data_spec_for

needs_sitk = pytest.mark.skipif(importlib.util.find_spec("SimpleITK") is None, reason="SimpleITK not installed")
ROLES = ("labelled", "unlabelled", "validation", "test")


# ----------------------------------------------------------------------------- spec expansion


def test_a_preset_fills_fields_the_spec_does_not_set():
    spec = DataSpec(root="/data/carve", preset="carve")
    assert (spec.layout, spec.foreground_labels, spec.clip, spec.normalise) == ("carve14", (1, 2), (-950, 100), "zscore")
    assert (spec.min_foreground, spec.crop, spec.crop_size, spec.context_slices) == (100, "corners", 176, 1)
    code = DataSpec(root="/data/carve", preset="carve", crop="random-corner", context_slices=3)
    assert (code.crop, code.context_slices, code.clip) == ("random-corner", 3, (-950, 100))
    assert DataSpec.model_validate(code.model_dump(mode="json")) == code  # the stored spec reloads as itself
    brats_spec = DataSpec(root="/data/hgg", preset="brats")
    assert (brats_spec.layout, brats_spec.foreground_labels, brats_spec.normalise) == ("brats2018", (1, 2, 4),
                                                                                      "zscore-nonzero")
    assert (brats_spec.min_foreground, brats_spec.crop, brats_spec.crop_size) == (5, "centre", 176)


def test_unknown_preset_and_synthetic_data():
    with pytest.raises(ValueError, match=r"unknown data preset 'carv' \(did you mean 'carve'\?\); "
                                         r"known: acdc, brats, brats-msd, carve, la2018, msd"):
        DataSpec(root="/x", preset="carv")
    phantom = DataSpec(synthetic={"kind": "tumours"}, preset="brats", crop="none")  # phantoms stay in the msd layout
    assert phantom.layout == "msd" and phantom.foreground_labels == (1, 2, 4)
    with pytest.raises(ValueError, match="synthetic phantoms are written in the msd layout"):
        DataSpec(synthetic={"kind": "vessels"}, layout="carve14")


def test_presets_and_unset_new_fields_leave_trial_ids_unchanged(tiny_dict):
    a = load_trial_spec({**tiny_dict(), "data": {"root": "/d", **DATA_PRESETS["carve"]}})
    b = load_trial_spec({**tiny_dict(), "data": {"root": "/d", "preset": "carve"}})
    assert a.trial_id() == b.trial_id()
    identity = load_trial_spec(tiny_dict()).identity_dict()
    assert set(identity["data"]) == {"root", "synthetic", "layout", "foreground_labels", "clip", "normalise",
                                     "min_foreground", "crop", "crop_size", "context_slices", "fingerprint"}
    assert "preset" not in identity["protocol"]


def test_protocol_presets():
    carve = ProtocolSpec(preset="carve-10fold", fold=3)
    assert (carve.labelled_cases, carve.unlabelled_cases, carve.validation_cases, carve.test_cases) == (1, 3, 1, 5)
    assert make_splits([f"c{i}" for i in range(10)], carve)["labelled"] == ["c3"]
    paper = ProtocolSpec(preset="brats", unlabelled_slices=6200)
    assert (paper.labelled_slices, paper.unlabelled_slices, paper.validation_cases, paper.test_cases) == (20, 6200, 2, 40)
    splits = make_splits([f"b{i:03d}" for i in range(210)], paper)
    assert [len(splits[r]) for r in ROLES] == [1, 167, 2, 40]  # unlabelled: rest
    assert isinstance(TrialSpec.model_fields["protocol"].default, ProtocolSpec)


# ----------------------------------------------------------------------------- CARVE on known arrays

CARVE_SHAPE = (6, 180, 192)  # (S, H, W)
# Vessel pixels per slice as (label 1, label 2): merged counts 50, 120, 101, 100, 300, 0.
CARVE_COUNTS = [(50, 0), (60, 60), (101, 0), (40, 60), (150, 150), (0, 0)]
CARVE_QUALIFYING = [1, 2, 4]  # strictly more than 100 merged vessel pixels


def _carve_case(i: int) -> tuple[np.ndarray, np.ndarray]:
    s, h, w = np.indices(CARVE_SHAPE)
    hu = (-2000 + 5000 * (h * CARVE_SHAPE[2] + w) / (CARVE_SHAPE[1] * CARVE_SHAPE[2]) + 7 * s + 11 * i).astype(np.int16)
    label = np.zeros(CARVE_SHAPE, np.uint8)
    for z, (artery, vein) in enumerate(CARVE_COUNTS):
        flat = label[z].reshape(-1)
        start = 97 * z + 1000 * i  # somewhere different on each slice and case
        flat[start : start + artery] = 1
        flat[start + artery : start + artery + vein] = 2
    return hu, label


@pytest.fixture(scope="module")
def carve_root(tmp_path_factory):
    pytest.importorskip("SimpleITK")
    root = tmp_path_factory.mktemp("carve14")
    for i in range(4):
        carve14.write_case(root, f"case_{i}", *_carve_case(i), spacing=(0.7, 0.7, 1.0))
    return root


PROTOCOL4 = ProtocolSpec(labelled_cases=1, unlabelled_cases=1, validation_cases=1, test_cases=1, labelled_slices=2)


@needs_sitk
@pytest.mark.parametrize("crop", ["corners", "random-corner"])
def test_carve_preset_on_known_arrays(carve_root, tmp_path, crop):
    spec = data_spec_for("carve14", carve_root, "carve", {"crop": crop})
    prepare_dataset(spec, tmp_path / "prepared")
    raw = load_trial_data(spec, PROTOCOL4)
    prepared = load_trial_data(DataSpec(prepared=str(tmp_path / "prepared"), preset="carve", crop=crop), PROTOCOL4)
    _assert_same(raw, prepared)
    (labelled_case,) = raw.splits["labelled"]
    per_slice = 4 if crop == "corners" else 1
    assert raw.labelled.slice_index.tolist() == [s for s in CARVE_QUALIFYING[:2] for _ in range(per_slice)]
    assert raw.test.slice_index.tolist() == [s for s in CARVE_QUALIFYING for _ in range(per_slice)]
    if crop == "corners":
        assert raw.labelled.patch[:4] == ["top-left", "top-right", "bottom-left", "bottom-right"]
    hu, label = _carve_case(int(labelled_case[-1]))
    clipped = np.clip(hu.astype(np.float64), -950, 100)
    assert clipped.min() == -950 and clipped.max() == 100  # the ramp crosses both bounds
    expected = ((clipped - clipped.mean()) / clipped.std()).astype(np.float32)  # z-score of the whole case
    vessel = np.isin(label, [1, 2]).astype(np.uint8)
    offsets = {"top-left": (0, 0), "top-right": (0, 16), "bottom-left": (4, 0), "bottom-right": (4, 16)}
    for k in range(len(raw.labelled)):
        s, (top, left) = raw.labelled.slice_index[k], offsets[raw.labelled.patch[k]]
        np.testing.assert_allclose(raw.labelled.images[k, 0], expected[s, top : top + 176, left : left + 176], atol=2e-6)
        np.testing.assert_array_equal(raw.labelled.labels[k], vessel[s, top : top + 176, left : left + 176])


@needs_sitk
def test_carve_with_three_adjacent_slices(carve_root, tmp_path):
    spec = data_spec_for("carve14", carve_root, "carve", {"context_slices": 3})
    prepare_dataset(spec, tmp_path / "p")
    raw = load_trial_data(spec, PROTOCOL4)
    _assert_same(raw, load_trial_data(DataSpec(prepared=str(tmp_path / "p"), preset="carve", context_slices=3),
                                      PROTOCOL4))
    assert raw.in_channels == 3
    first = raw.labelled.images[0]  # slice 1, top-left: channels = slices 0, 1, 2
    np.testing.assert_array_equal(first[1], raw.labelled.images[0, 1])
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])


# ----------------------------------------------------------------------------- BRATS on known arrays

BRATS_SHAPE = (5, 184, 184)
BRATS_TUMOUR = [0, 3, 6, 5, 40]  # tumour pixels per slice (labels 1, 2, 4 mixed): slices 2 and 4 have > 5


def _brats_case(i: int) -> tuple[np.ndarray, np.ndarray]:
    s, h, w = np.indices(BRATS_SHAPE)
    brain = (h - 92) ** 2 + (w - 92) ** 2 < 80**2
    image = np.stack([np.where(brain, 100.0 * (m + 1) + h + 0.5 * w + s + i, 0.0) for m in range(4)]).astype(np.float32)
    label = np.zeros(BRATS_SHAPE, np.uint8)
    values = np.array([1, 2, 4])
    for z, n in enumerate(BRATS_TUMOUR):
        label[z].reshape(-1)[92 * 184 + 80 : 92 * 184 + 80 + n] = values[np.arange(n) % 3]
    return image, label


@pytest.fixture(scope="module")
def brats_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hgg")
    for i in range(5):
        brats.write_case(root, f"Brats18_T_{i}_1", *_brats_case(i), np.diag([-1.0, -1.0, 1.0, 1.0]))
    return root


def test_brats_preset_on_known_arrays(brats_root, tmp_path):
    spec = data_spec_for("brats2018", brats_root, "brats")
    protocol = ProtocolSpec(labelled_cases=1, unlabelled_cases="rest", validation_cases=1, test_cases=1,
                            labelled_slices=2, unlabelled_slices=3)
    prepare_dataset(spec, tmp_path / "p")
    raw = load_trial_data(spec, protocol)
    _assert_same(raw, load_trial_data(DataSpec(prepared=str(tmp_path / "p"), preset="brats"), protocol))
    assert raw.in_channels == 4 and raw.labelled.images.shape[2:] == (176, 176)
    assert raw.labelled.slice_index.tolist() == [2, 4]  # the first 2 slices with > 5 tumour pixels
    assert len(raw.splits["unlabelled"]) == 2 and len(raw.unlabelled) == 3  # a pool of 3 of their 4 slices
    (case,) = raw.splits["labelled"]
    image, label = _brats_case(int(case.split("_")[2]))
    for m in range(4):
        brain = image[m][image[m] != 0].astype(np.float64)
        expected = np.where(image[m] != 0, (image[m] - brain.mean()) / brain.std(), 0).astype(np.float32)
        np.testing.assert_allclose(raw.labelled.images[:, m], expected[[2, 4], 4:180, 4:180], atol=2e-6)
    np.testing.assert_array_equal(raw.labelled.labels, np.isin(label[[2, 4], 4:180, 4:180], [1, 2, 4]))


def _assert_same(a, b) -> None:
    assert a.splits == b.splits and a.data_fingerprint == b.data_fingerprint and a.fingerprint == b.fingerprint
    for role in ROLES:
        x, y = getattr(a, role), getattr(b, role)
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.slice_index, y.slice_index)
        assert x.case_ids == y.case_ids and x.patch == y.patch
