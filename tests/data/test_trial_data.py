"""load_trial_data end to end on tiny phantoms: roles, selection, crops, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from mismatch.config import DataSpec, ProtocolSpec, SynthSpec
from mismatch.data import DataError, FingerprintMismatchError, load_case, load_trial_data, write_synthetic_dataset
from mismatch.data.preprocess import qualifying_slices

SYNTH = SynthSpec(kind="vessels", cases=5, size=(32, 32), slices=8, seed=0)
PROTOCOL = ProtocolSpec(labelled_cases=1, unlabelled_cases=2, validation_cases=1, test_cases=1, labelled_slices=3)


def spec(**changes) -> DataSpec:
    return DataSpec(**{"synthetic": SYNTH, "min_foreground": 5, **changes})


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trial(cache):
    return load_trial_data(spec(), PROTOCOL, cache)


def test_roles_shapes_and_dtypes(trial):
    for role in ("labelled", "unlabelled", "validation", "test"):
        s = getattr(trial, role)
        assert s.images.dtype == np.float32 and s.images.shape[1:] == (1, 32, 32)
        assert s.labels.dtype == np.uint8 and s.labels.shape == (len(s), 32, 32)
        assert s.slice_index.dtype == np.int64 and len(s.case_ids) == len(s.patch) == len(s)
        assert set(s.patch) == {"full"} and set(s.case_ids) == set(trial.splits[role])
    assert trial.in_channels == 1 and len(trial.labelled) == 3
    assert set(np.unique(trial.test.labels)) == {0, 1}
    assert not trial.unlabelled.labels.any()  # never exposed


def test_labelled_are_the_first_qualifying_slices_of_the_labelled_case(trial):
    (case,) = trial.splits["labelled"]
    label = load_case(trial.root, case).label
    expected = qualifying_slices(label == 1, 5)[:3]
    np.testing.assert_array_equal(trial.labelled.slice_index, expected)
    np.testing.assert_array_equal(trial.labelled.labels, label[expected])
    for test_case in trial.splits["test"]:  # every qualifying slice of a held-out case
        mask = np.array(trial.test.case_ids) == test_case
        expected = qualifying_slices(load_case(trial.root, test_case).label == 1, 5)
        np.testing.assert_array_equal(trial.test.slice_index[mask], expected)


def test_splits_are_disjoint_and_deterministic(trial, cache):
    cases = [c for role in trial.splits.values() for c in role]
    assert len(cases) == len(set(cases)) == 5
    again = load_trial_data(spec(), PROTOCOL, cache)
    assert again.splits == trial.splits and again.fingerprint == trial.fingerprint
    np.testing.assert_array_equal(again.unlabelled.images, trial.unlabelled.images)


def test_images_are_zscored_per_case(cache):
    data = load_trial_data(spec(min_foreground=0), PROTOCOL, cache)
    assert abs(float(data.test.images.mean())) < 0.5  # qualifying slices of a z-scored case


def test_fingerprints(trial, cache):
    assert len(trial.fingerprint) == 64 and int(trial.fingerprint, 16) >= 0
    other_fold = load_trial_data(spec(), PROTOCOL.model_copy(update={"fold": 1}), cache)
    assert other_fold.data_fingerprint == trial.data_fingerprint
    assert other_fold.fingerprint != trial.fingerprint  # the protocol is part of it
    other_recipe = load_trial_data(spec(clip=(-950.0, 100.0)), PROTOCOL, cache)
    assert other_recipe.data_fingerprint != trial.data_fingerprint
    other_data = load_trial_data(DataSpec(synthetic=SYNTH.model_copy(update={"seed": 1}), min_foreground=5), PROTOCOL, cache)
    assert other_data.data_fingerprint != trial.data_fingerprint


def test_pinned_fingerprint_is_checked(trial, cache):
    load_trial_data(spec(fingerprint=trial.data_fingerprint), PROTOCOL, cache)
    with pytest.raises(FingerprintMismatchError, match="but the spec pins 0000"):
        load_trial_data(spec(fingerprint="0000"), PROTOCOL, cache)


def test_a_root_folder_and_a_synthetic_spec_share_one_path(trial, tmp_path):
    root = write_synthetic_dataset(tmp_path / "ds", "vessels", 5, (32, 32), 8, seed=0)
    data = load_trial_data(DataSpec(root=str(root), min_foreground=5), PROTOCOL)
    assert data.data_fingerprint == trial.data_fingerprint  # same bytes, same recipe
    np.testing.assert_array_equal(data.test.images, trial.test.images)
    (root / "labelsTr" / "vessels_003.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr/vessels_003\.nii\.gz"):
        load_trial_data(DataSpec(root=str(root)), PROTOCOL)


def test_corners_are_exact_crops_of_the_full_slices(trial, cache):
    data = load_trial_data(spec(crop="corners", crop_size=16), PROTOCOL, cache)
    assert len(data.labelled) == 4 * len(trial.labelled)
    assert data.labelled.patch[:4] == ["top-left", "top-right", "bottom-left", "bottom-right"]
    np.testing.assert_array_equal(data.labelled.slice_index, np.repeat(trial.labelled.slice_index, 4))
    full = trial.labelled.images[0]
    np.testing.assert_array_equal(data.labelled.images[1], full[:, :16, 16:])
    np.testing.assert_array_equal(data.labelled.images[2], full[:, 16:, :16])
    np.testing.assert_array_equal(data.labelled.labels[3], trial.labelled.labels[0][16:, 16:])


def test_random_corner_is_seeded_and_centre_crop_is_centred(trial, cache):
    a = load_trial_data(spec(crop="random-corner", crop_size=16), PROTOCOL, cache)
    b = load_trial_data(spec(crop="random-corner", crop_size=16), PROTOCOL, cache)
    assert a.test.patch == b.test.patch and len(set(a.test.patch)) > 1
    assert len(a.test) == len(trial.test)
    centre = load_trial_data(spec(crop="centre", crop_size=24), PROTOCOL, cache)
    np.testing.assert_array_equal(centre.test.images, trial.test.images[:, :, 4:28, 4:28])
    with pytest.raises(ValueError, match="larger than the slice"):
        load_trial_data(spec(crop="centre", crop_size=40), PROTOCOL, cache)


def test_slices_are_padded_to_a_multiple_of_8_with_the_case_minimum(cache):
    synth = SynthSpec(kind="vessels", cases=5, size=(36, 42), slices=6, seed=0)
    data = load_trial_data(DataSpec(synthetic=synth), PROTOCOL, cache)
    images, labels = data.test.images, data.test.labels
    assert images.shape[2:] == (40, 48) and labels.shape[1:] == (40, 48)
    case = load_case(data.root, data.splits["test"][0]).image
    minimum = ((case - case.mean()) / case.std()).min()
    np.testing.assert_allclose(images[:, :, 36:, :], minimum, rtol=1e-5)
    np.testing.assert_allclose(images[:, :, :, 42:], minimum, rtol=1e-5)
    assert not labels[:, 36:, :].any() and not labels[:, :, 42:].any()


def test_tumours_with_adjacent_slices_and_nonzero_zscore(cache):
    synth = SynthSpec(kind="tumours", cases=5, size=(32, 32), slices=10, seed=0)
    data = DataSpec(synthetic=synth, foreground_labels=(1, 2, 3), normalise="zscore-nonzero", context_slices=3,
                    min_foreground=5)
    trial = load_trial_data(data, PROTOCOL, cache)
    assert trial.in_channels == 12 and trial.test.images.shape[1] == 12
    first = trial.labelled.images[0]  # (12, H, W)
    assert np.all(first[:, :2, :2] == 0)  # background (outside the brain) stays 0
    assert np.all(first[:, 16, 16] != 0)


def test_unlabelled_sample_and_its_limits(trial, cache):
    data = load_trial_data(spec(), PROTOCOL.model_copy(update={"unlabelled_slices": 4}), cache)
    assert len(data.unlabelled) == 4
    refs = set(zip(trial.unlabelled.case_ids, trial.unlabelled.slice_index.tolist()))
    assert set(zip(data.unlabelled.case_ids, data.unlabelled.slice_index.tolist())) <= refs
    with pytest.raises(DataError, match="unlabelled slices asked"):
        load_trial_data(spec(), PROTOCOL.model_copy(update={"unlabelled_slices": 10_000}), cache)
    none = load_trial_data(spec(), PROTOCOL.model_copy(update={"unlabelled_cases": 0}), cache)
    assert none.unlabelled.images.shape == (0, 1, 32, 32)
