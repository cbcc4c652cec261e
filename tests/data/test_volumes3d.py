"""3D trials' data: the DataSpec's 3D fields, whole volumes per role (MSD and la2018-h5 layouts),
padding, and the patch sampler (foreground fraction, determinism)."""

from __future__ import annotations

import numpy as np
import pytest

from mismatch.config import DataSpec, ProtocolSpec, SpecError, load_data_spec, load_trial_spec
from mismatch.data import load_trial_data
from mismatch.data.h5layouts import LA_SPACING_MM, write_la_case, write_list
from mismatch.data.preprocess import zscore
from mismatch.data.volumes3d import VolumeSet, crop_patch, pad_to_patch, patch_start, sample_patches
from tests.volumes3d_helpers import SPACING, write_volume_dataset

PATCH = [16, 32, 16]  # four poolings leave 1 x 2 x 1 voxels
PROTOCOL = ProtocolSpec(labelled_cases=1, unlabelled_cases=2, validation_cases=1, test_cases=1)


@pytest.fixture(scope="module")
def vol_root(tmp_path_factory):
    # case 1 is smaller than the patch along S and W (12 < 16): it shows the padding
    sizes = [(16, 24, 20), (12, 24, 14), (20, 16, 16), (16, 20, 24), (18, 16, 20)]
    return write_volume_dataset(tmp_path_factory.mktemp("vol3d") / "vol3d", cases=5, sizes=sizes)


def _spec(root, **extra) -> DataSpec:
    return load_data_spec({"root": str(root), "spatial_dims": 3, "patch_size": PATCH, **extra})


# ----------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(("extra", "message"), [
    ({"spatial_dims": 3}, "spatial_dims: 3 needs patch_size"),
    ({"spatial_dims": 3, "patch_size": [16, 24, 16]}, "divisible by 16"),
    ({"spatial_dims": 3, "patch_size": [16, 8, 16]}, "greater than or equal to 16"),
    ({"spatial_dims": 3, "patch_size": PATCH, "patch_foreground": 1.5}, "less than or equal to 1"),
    ({"spatial_dims": 3, "patch_size": PATCH, "sw_overlap": 1.0}, "less than 1"),
    ({"spatial_dims": 3, "patch_size": PATCH, "sw_mode": "linear"}, "'gaussian' or 'constant'"),
    ({"spatial_dims": 3, "patch_size": PATCH, "crop": "centre"}, "crop and context_slices are 2D"),
    ({"patch_size": PATCH}, "patch_size apply to spatial_dims: 3"),
    ({"sw_overlap": 0.25, "patch_foreground": 0.2}, "patch_foreground, sw_overlap apply to spatial_dims: 3"),
])
def test_3d_fields_are_validated(extra, message):
    with pytest.raises(SpecError, match=message):
        load_data_spec({"synthetic": {}, **extra})


def test_stored_specs_reload_as_themselves_in_2d_and_3d():
    for spec in (load_data_spec({"synthetic": {}}), load_data_spec({"synthetic": {}, "spatial_dims": 3, "patch_size": PATCH})):
        assert load_data_spec(spec.model_dump(mode="json")) == spec


def test_2d_trial_ids_do_not_see_the_3d_fields_and_3d_ones_do(tiny_dict):
    spec2d = load_trial_spec(tiny_dict())
    assert not {"spatial_dims", "patch_size", "sw_mode"} & set(spec2d.identity_dict()["data"])
    data3d = {**tiny_dict()["data"], "spatial_dims": 3, "patch_size": PATCH}
    a = load_trial_spec(tiny_dict(data=data3d))
    b = load_trial_spec(tiny_dict(data={**data3d, "sw_overlap": 0.25}))
    assert a.identity_dict()["data"]["patch_size"] == PATCH and a.trial_id() != b.trial_id() != spec2d.trial_id()


# ----------------------------------------------------------------------------- volumes per role


def test_msd_volumes_per_role_normalised_per_case_and_padded_for_training(vol_root):
    data = load_trial_data(_spec(vol_root), PROTOCOL)
    assert data.spatial_dims == 3 and data.window.size == (16, 32, 16) and data.in_channels == 1
    assert {r: len(getattr(data, r)) for r in ("labelled", "unlabelled", "validation", "test")} == {
        "labelled": 1, "unlabelled": 2, "validation": 1, "test": 1}
    assert data.splits["labelled"] == ["vol_000"]  # fold 0 labels the first case, a whole case
    for role in ("labelled", "unlabelled", "validation", "test"):
        volumes: VolumeSet = getattr(data, role)
        for image, label, shape, spacing in zip(volumes.images, volumes.labels, volumes.shapes, volumes.spacing):
            assert image.dtype == np.float32 and label.dtype == np.uint8 and spacing == pytest.approx(SPACING)
            body = image[0, : shape[0], : shape[1], : shape[2]]
            assert body.mean() == pytest.approx(0.0, abs=1e-4) and body.std() == pytest.approx(1.0, abs=1e-4)
            if role in ("labelled", "unlabelled"):
                assert all(n >= 16 for n in label.shape)
            else:
                assert label.shape == shape  # inference volumes keep their own grid
    assert all(not y.any() for y in data.unlabelled.labels)  # unlabelled labels are never exposed
    assert data.labelled.labels[0].any() and data.test.labels[0].any()
    assert set(data.geometry) == set(data.splits["test"])
    assert data.geometry[data.splits["test"][0]].spacing == pytest.approx(SPACING)


def test_a_volume_smaller_than_the_patch_is_padded_at_the_end_with_its_minimum_and_background(vol_root):
    protocol = ProtocolSpec(fold=1, labelled_cases=1, unlabelled_cases=2, validation_cases=1, test_cases=1)
    data = load_trial_data(_spec(vol_root), protocol)
    assert data.splits["labelled"] == ["vol_001"]  # the (12, 24, 14) case
    image, label = data.labelled.images[0], data.labelled.labels[0]
    assert image.shape == (1, 16, 32, 16) and data.labelled.shapes[0] == (12, 24, 14)
    body = image[0, :12, :24, :14]
    assert (image[0, 12:] == body.min()).all() and (image[0, :, 24:] == body.min()).all()
    assert (image[0, :, :, 14:] == body.min()).all()
    assert not label[12:].any() and not label[:, 24:].any() and not label[:, :, 14:].any() and label[:12, :24, :14].any()


def test_pad_to_patch_leaves_a_large_enough_volume_alone():
    image, label = np.ones((2, 16, 16, 16), np.float32), np.zeros((16, 16, 16), np.uint8)
    out_image, out_label = pad_to_patch(image, label, (16, 16, 16))
    assert out_image is image and out_label is label
    padded, _ = pad_to_patch(np.stack([image[0], 3 * image[1]]), label, (20, 16, 16))
    assert padded.shape == (2, 20, 16, 16) and padded[0, 19, 0, 0] == 1 and padded[1, 19, 0, 0] == 3  # per channel


def test_la2018_h5_volumes_read_z_as_depth_with_0625_mm(tmp_path):
    rng = np.random.default_rng(3)
    stored = {}
    for i in range(4):
        image = rng.normal(10.0, 3.0, (20, 18, 16)).astype(np.float32)  # (X, Y, Z)
        label = np.zeros((20, 18, 16), np.uint8)
        label[5:12, 4:10, 3 + i : 9 + i] = 1
        write_la_case(tmp_path, f"LA{i}", image, label)
        stored[f"LA{i}"] = image
    write_list(tmp_path / "train.list", ["LA0", "LA1", "LA2"])
    write_list(tmp_path / "test.list", ["LA3"])
    spec = load_data_spec({"root": str(tmp_path), "layout": "la2018-h5", "spatial_dims": 3, "patch_size": PATCH})
    data = load_trial_data(spec, ProtocolSpec(labelled_cases=1, unlabelled_cases=1, validation_cases=1, test_cases=1))
    case = data.splits["test"][0]
    expected = zscore(stored[case].transpose(2, 0, 1)[None])  # (S, H, W) = (Z, X, Y), z-scored per case
    np.testing.assert_allclose(data.test.images[0], expected, atol=1e-5)
    assert data.test.spacing[0] == LA_SPACING_MM and data.geometry[case].shape == (16, 20, 18)


def test_3d_trials_refuse_a_prepared_cache():
    with pytest.raises(SpecError, match="not a prepared slice cache"):
        load_data_spec({"prepared": "/x", "spatial_dims": 3, "patch_size": PATCH})


# ----------------------------------------------------------------------------- the patch sampler


def _one_voxel_set() -> VolumeSet:
    label = np.zeros((32, 32, 32), np.uint8)
    label[0, 0, 0] = 1  # a uniform 16^3 patch holds it only when its start is (0, 0, 0): 1 in 17^3
    image = np.arange(label.size, dtype=np.float32).reshape(1, *label.shape)
    return VolumeSet([image], [label], ["c"], [label.shape], [(1.0, 1.0, 1.0)])


def _foreground_fraction(p: float, n: int = 4000, seed: int = 0) -> tuple[int, np.ndarray]:
    volumes = _one_voxel_set()
    _, labels = sample_patches(volumes, np.zeros(n, dtype=np.int64), (16, 16, 16), np.random.default_rng(seed), p)
    return int(labels.reshape(n, -1).any(axis=1).sum()), labels


def test_labelled_patches_hold_foreground_with_the_configured_probability():
    n = 4000
    for p in (0.0, 0.3, 0.5, 1.0):
        hits, _ = _foreground_fraction(p, n)
        # hits ~ Binomial(n, p) (+ a uniform start at the origin, 1 in 4913): within 4.5 sd
        assert abs(hits - n * p) <= 4.5 * np.sqrt(n * p * (1 - p)) + 3, (p, hits)
    assert _foreground_fraction(0.3, n)[0] == 1185  # known value of seed 0: the sampler's draws are pinned
    assert _foreground_fraction(1.0, n)[0] == n


def test_patches_are_deterministic_in_the_generator():
    a = _foreground_fraction(0.5, 50, seed=7)[1]
    b = _foreground_fraction(0.5, 50, seed=7)[1]
    c = _foreground_fraction(0.5, 50, seed=8)[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_centred_patch_has_its_foreground_voxel_at_the_centre_and_crops_the_image_alike():
    label = np.zeros((40, 40, 40), np.uint8)
    label[20, 17, 25] = 1
    start = patch_start(label.shape, (16, 16, 16), np.random.default_rng(0), np.flatnonzero(label), 1.0)
    assert start == (12, 9, 17)  # voxel - size // 2
    volumes = VolumeSet([label[None].astype(np.float32)], [label], ["c"], [label.shape], [(1.0, 1.0, 1.0)])
    images, labels = sample_patches(volumes, np.array([0]), (16, 16, 16), np.random.default_rng(0), 1.0)
    assert labels[0, 8, 8, 8] == 1 and images[0, 0, 8, 8, 8] == 1
    np.testing.assert_array_equal(labels[0], crop_patch(label, start, (16, 16, 16)))


def test_uniform_patches_cover_every_start_and_always_fit():
    rng = np.random.default_rng(1)
    starts = np.array([patch_start((18, 17, 16), (16, 16, 16), rng) for _ in range(400)])
    assert starts.min(axis=0).tolist() == [0, 0, 0] and starts.max(axis=0).tolist() == [2, 1, 0]


def test_a_patch_larger_than_the_volume_is_an_error():
    from mismatch.data.errors import DataError

    with pytest.raises(DataError, match="pad it first"):
        patch_start((8, 16, 16), (16, 16, 16), np.random.default_rng(0))
