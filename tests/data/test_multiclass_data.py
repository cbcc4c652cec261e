"""Multi-class data: ``DataSpec.classes`` turns label values into class indices 0..C-1, the
class names reach the trial data, binary specs (and their fingerprints) stay as they were."""

from __future__ import annotations

import numpy as np
import pytest

from mismatch.config import DataSpec, ProtocolSpec, SpecError, load_trial_spec
from mismatch.data import get_layout, load_trial_data, prepare_dataset
from mismatch.data import preprocess as pp
from mismatch.data.errors import DataError
from mismatch.data.layouts import class_names
from mismatch.data.recipe import RECIPE_FIELDS, recipe
from mismatch.data.synth import write_synthetic_dataset

PROTOCOL = ProtocolSpec(labelled_cases=1, unlabelled_cases=1, validation_cases=1, test_cases=2, labelled_slices=2)


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("acdc") / "acdc", "acdc-h5", 3, size=(24, 20), slices=5)


def test_class_map_puts_each_listed_value_at_its_class_index():
    label = np.array([[0, 1, 2], [3, 4, 2]])
    assert pp.class_map(label, [1, 2, 3]).tolist() == [[0, 1, 2], [3, 0, 2]]
    assert pp.class_map(label, [3, 1]).tolist() == [[0, 2, 0], [1, 0, 0]]
    assert pp.label_map(label, [2, 3], None).tolist() == [[0, 0, 1], [1, 0, 1]]  # binary: as before


def test_qualifying_slices_count_pixels_of_any_class_not_their_indices():
    mask = np.zeros((2, 4, 4), np.uint8)
    mask[0, 0, :2] = 3  # two pixels of class 3 (their indices sum to 6)
    mask[1, :2, :2] = 1  # four pixels of class 1
    assert pp.qualifying_slices(mask, 2).tolist() == [1]


def test_classes_are_validated_and_give_num_classes(acdc_root):
    spec = DataSpec(root=str(acdc_root), layout="acdc-h5", classes=[1, 2, 3])
    assert spec.num_classes == 4
    assert DataSpec(root=str(acdc_root), layout="acdc-h5", foreground_labels=[3]).num_classes == 2
    for bad in ([0, 1], [1, 1], []):
        with pytest.raises(ValueError, match="classes must be distinct label values > 0"):
            DataSpec(root=str(acdc_root), layout="acdc-h5", classes=bad)
    with pytest.raises(ValueError, match="are multi-class: give classes"):
        DataSpec(root=str(acdc_root), layout="acdc-h5")


def test_acdc_with_classes_loads_four_class_label_maps_named_by_the_layout(acdc_root):
    spec = DataSpec(root=str(acdc_root), layout="acdc-h5", classes=[1, 2, 3])
    data = load_trial_data(spec, PROTOCOL)
    assert (data.num_classes, data.class_names) == (4, ("RV", "Myo", "LV"))
    layout = get_layout("acdc-h5")
    for case, s, label in zip(data.test.case_ids, data.test.slice_index, data.test.labels):
        raw = layout.load_label(acdc_root, case)[s]  # values 0-3 are the classes themselves
        h, w = raw.shape
        np.testing.assert_array_equal(label[:h, :w], raw)
        assert not label[h:].any() and not label[:, w:].any()  # padding is background
    assert set(np.unique(data.test.labels)) == {0, 1, 2, 3}
    reordered = load_trial_data(DataSpec(root=str(acdc_root), layout="acdc-h5", classes=[3, 1]), PROTOCOL)
    assert reordered.class_names == ("LV", "RV") and reordered.num_classes == 3
    np.testing.assert_array_equal(reordered.test.labels, pp.class_map(data.test.labels, [3, 1]))


def test_a_binary_spec_is_unchanged_and_its_recipe_has_no_classes(acdc_root):
    binary = DataSpec(root=str(acdc_root), layout="acdc-h5", foreground_labels=[3])
    assert list(recipe(binary)) == list(RECIPE_FIELDS)  # the fingerprint's header as before
    data = load_trial_data(binary, PROTOCOL)
    assert (data.num_classes, data.class_names) == (2, ("foreground",))
    assert set(np.unique(data.test.labels)) == {0, 1}
    multi = load_trial_data(DataSpec(root=str(acdc_root), layout="acdc-h5", classes=[3]), PROTOCOL)
    np.testing.assert_array_equal(multi.test.labels, data.test.labels)  # one class: the same 0/1 map
    assert multi.class_names == ("LV",) and multi.data_fingerprint != data.data_fingerprint


def test_msd_class_names_come_from_dataset_json(tmp_path):
    root = write_synthetic_dataset(tmp_path / "msd", "vessels", 2, size=(16, 16), slices=4)
    names = get_layout("msd").label_names(root)
    assert names[0] == "background" and class_names("msd", root, [1]) == (names[1],)
    assert class_names("msd", root, [7]) == ("class 7",) and class_names("msd", root, None) == ("foreground",)


def test_a_prepared_cache_keeps_the_classes_and_their_names(acdc_root, tmp_path):
    spec = DataSpec(root=str(acdc_root), layout="acdc-h5", classes=[1, 2, 3])
    prepared = prepare_dataset(spec, tmp_path / "prep")
    from_cache = load_trial_data(DataSpec(prepared=str(prepared.path), layout="acdc-h5", classes=[1, 2, 3]), PROTOCOL)
    raw = load_trial_data(spec, PROTOCOL)
    assert from_cache.class_names == ("RV", "Myo", "LV") and from_cache.num_classes == 4
    np.testing.assert_array_equal(from_cache.test.labels, raw.test.labels)
    with pytest.raises(DataError, match=r"classes: cache \[1, 2, 3\], spec null"):  # binary spec, multi-class cache
        load_trial_data(DataSpec(prepared=str(prepared.path), layout="acdc-h5", foreground_labels=[1]), PROTOCOL)


def test_a_trial_spec_carries_the_classes(acdc_root):
    spec = load_trial_spec({"study": "s", "data": {"root": str(acdc_root), "layout": "acdc-h5", "classes": [1, 2, 3]},
                            "method": {"name": "sup1"}})
    assert spec.data.classes == (1, 2, 3) and spec.data.num_classes == 4
    with pytest.raises(SpecError):
        load_trial_spec({"study": "s", "data": {"root": str(acdc_root), "layout": "acdc-h5", "classes": [0]},
                         "method": {"name": "sup1"}})


def test_classes_enter_the_trial_id_only_when_given(acdc_root):
    def trial_id(**data):
        return load_trial_spec({"study": "s", "data": {"root": "/d", "layout": "acdc-h5", **data},
                                "method": {"name": "sup1"}}).trial_id()

    assert trial_id(foreground_labels=[3]) == trial_id(foreground_labels=[3], classes=None)
    assert trial_id(classes=[1, 2, 3]) != trial_id(classes=[3, 2, 1])
