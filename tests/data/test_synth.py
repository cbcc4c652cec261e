"""Synthetic phantoms: determinism, the MSD layout they are written in, their anatomy."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mismatch.config import SynthSpec
from mismatch.data import (
    OutputExistsError,
    load_case,
    make_phantom,
    read_dataset_json,
    synth,
    synthetic_dataset,
    write_synthetic_dataset,
)
from mismatch.data.msd import list_cases

SIZE, SLICES = (32, 40), 8


@pytest.fixture(scope="module")
def vessels_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("v") / "ds", "vessels", 2, SIZE, SLICES, seed=3)


@pytest.fixture(scope="module")
def tumours_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("t") / "ds", "tumours", 2, SIZE, SLICES, seed=3)


@pytest.mark.parametrize("kind", ["vessels", "tumours"])
def test_same_seed_same_arrays_other_seed_other_arrays(kind):
    a_img, a_lab, a_aff = make_phantom(kind, (32, 32), 6, seed=1, index=0)
    b_img, b_lab, b_aff = make_phantom(kind, (32, 32), 6, seed=1, index=0)
    c_img, c_lab, _ = make_phantom(kind, (32, 32), 6, seed=2, index=0)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    np.testing.assert_array_equal(a_aff, b_aff)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_lab, c_lab)
    d_img, _, _ = make_phantom(kind, (32, 32), 6, seed=1, index=1)
    assert not np.array_equal(a_img, d_img)  # cases of one dataset differ


def test_written_files_are_identical_for_the_same_seed(tmp_path, vessels_root):
    again = write_synthetic_dataset(tmp_path / "again", "vessels", 2, SIZE, SLICES, seed=3)
    for path in sorted(vessels_root.rglob("*.nii.gz")):
        other = again / path.relative_to(vessels_root)
        np.testing.assert_array_equal(nib.load(path).get_fdata(), nib.load(other).get_fdata())
        assert path.read_bytes() == other.read_bytes()  # gzip headers carry no timestamp


def test_vessels_layout(vessels_root):
    meta = json.loads((vessels_root / "dataset.json").read_text())
    assert meta["channel_names"] == meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "vessel": 1}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    names = sorted(p.name for p in (vessels_root / "imagesTr").iterdir())
    assert names == ["vessels_000_0000.nii.gz", "vessels_001_0000.nii.gz"]
    assert sorted(p.name for p in (vessels_root / "labelsTr").iterdir()) == ["vessels_000.nii.gz", "vessels_001.nii.gz"]
    img = nib.load(vessels_root / "imagesTr" / "vessels_000_0000.nii.gz")
    lab = nib.load(vessels_root / "labelsTr" / "vessels_000.nii.gz")
    assert img.shape == lab.shape == (*SIZE, SLICES)  # NIfTI axes (H, W, S)
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    assert np.allclose(img.affine, lab.affine) and np.all(np.diag(img.affine)[:3] > 0)
    assert set(np.unique(np.asarray(lab.dataobj))) == {0, 1}


def test_vessels_are_ct_like_thin_and_branching(vessels_root):
    case = load_case(vessels_root, "vessels_000")
    hu, label = case.image[0], case.label
    assert case.image.shape == (1, SLICES, *SIZE) and case.image.dtype == np.float32
    assert -1150 < np.median(hu[:, 0, :]) < -850  # air at the image border
    assert -50 < np.median(hu[:, SIZE[0] // 2, SIZE[1] // 2 - 1 : SIZE[1] // 2 + 1]) < 130  # mediastinum
    assert np.median(hu[label == 1]) > np.median(hu[(label == 0) & (hu < -500) & (hu > -950)]) + 300
    fraction = label.mean()
    assert 0.003 < fraction < 0.08  # thin structures
    _, components = ndimage.label(label)
    assert components >= 2  # at least one tree per lung
    assert (label.sum(axis=(1, 2)) > 0).mean() > 0.7  # most slices hold vessels


def test_vessel_trees_branch_with_decreasing_radius():
    rng = np.random.default_rng(0)
    chest = synth._Chest.sample(rng, (24, 64, 64), synth.slice_factor((64, 64), 24))
    radii = synth._vessel_trees(rng, chest)[:, 6]
    assert len(radii) > 40  # many segments: bifurcations happened
    assert radii.max() >= 1.0 and radii.min() < 0.8
    assert np.median(radii) < 0.75 * radii.max()  # most segments are thinner than the roots


def test_partial_volume_blends_vessel_and_lung(vessels_root):
    case = load_case(vessels_root, "vessels_000")
    hu, label = case.image[0], case.label
    edge = ndimage.binary_dilation(label, iterations=1) & ~label.astype(bool)
    lung = (label == 0) & ~edge & (hu < -500) & (hu > -1000)
    assert np.mean(hu[lung]) + 50 < np.mean(hu[edge]) < np.mean(hu[label == 1])


def test_tumours_layout_and_labels(tumours_root):
    info = read_dataset_json(tumours_root)
    assert info.channel_names == ("t1", "t1ce", "t2", "flair")
    assert info.labels["edema"] == 1 and info.labels["enhancing tumour"] == 3
    assert len(list((tumours_root / "imagesTr").iterdir())) == 2 * 4
    case = load_case(tumours_root, "tumours_000")
    assert case.image.shape == (4, SLICES, *SIZE)
    assert set(np.unique(case.label)) <= {0, 1, 2, 3} and (case.label > 0).any()
    brain = case.image[0] > 0
    assert np.all(case.image[:, ~brain] == 0)  # background exactly 0 in every modality
    assert np.all(case.label[~brain] == 0)


def test_tumour_contrast_differs_per_modality():
    image, label, _ = make_phantom("tumours", (48, 48), 12, seed=0)
    brain = image[0] > 0
    healthy = brain & (label == 0)
    ratio = {c: image[c][label == 3].mean() / image[c][healthy].mean() for c in range(4)}
    assert ratio[1] > 1.4 * ratio[0]  # enhancing tumour is bright on t1ce, not on t1
    edema = {c: image[c][label == 1].mean() / image[c][healthy].mean() for c in range(4)}
    assert edema[3] > 1.3 and edema[0] < 1.0  # edema bright on flair, dark on t1


def test_refuses_non_empty_output_unless_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="not empty"):
        write_synthetic_dataset(out, "vessels", 1, (16, 16), 2)
    assert (out / "keep.txt").exists()
    write_synthetic_dataset(out, "vessels", 1, (16, 16), 2, overwrite=True)
    assert not (out / "keep.txt").exists() and list_cases(out) == ["vessels_000"]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary folders left


def test_crash_leaves_no_partial_dataset(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth, "write_dataset_json", boom)
    with pytest.raises(RuntimeError):
        write_synthetic_dataset(tmp_path / "ds", "vessels", 1, (16, 16), 2)
    assert list(tmp_path.iterdir()) == []


def test_cache_is_keyed_by_spec_and_tolerates_losing_a_race(tmp_path, monkeypatch):
    spec = SynthSpec(cases=1, size=(16, 16), slices=2)
    first = synthetic_dataset(spec, tmp_path)
    assert synthetic_dataset(spec, tmp_path) == first
    assert synthetic_dataset(spec.model_copy(update={"seed": 1}), tmp_path) != first

    other = SynthSpec(cases=1, size=(16, 16), slices=3)
    real_write = synth._write_into

    def write_and_lose(root, *args):  # another process publishes while we write
        real_write(root, *args)
        winner = tmp_path / "synthetic" / f"vessels-{synth.synth_key(other)}"
        real_write(winner, *args)

    monkeypatch.setattr(synth, "_write_into", write_and_lose)
    path = synthetic_dataset(other, tmp_path)
    assert list_cases(path) == ["vessels_000"]
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == sorted(
        [first.name, f"vessels-{synth.synth_key(other)}", f"vessels-{synth.synth_key(spec.model_copy(update={'seed': 1}))}"]
    )


def test_unknown_kind_and_tiny_size_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown phantom kind"):
        write_synthetic_dataset(tmp_path / "x", "lungs", 1)
    with pytest.raises(ValueError, match="at least 16x16"):
        make_phantom("vessels", (8, 8), 2, seed=0)
