"""The HDF5 benchmark layouts `la2018-h5` and `acdc-h5`: phantoms written, checked, read back,
every check problem named with its file, and a tiny LA trial end to end."""

from __future__ import annotations

import re
import shutil

import h5py
import numpy as np
import pytest

from mismatch.cli import main
from mismatch.config import SpecError, load_trial_spec
from mismatch.data import check_dataset, get_layout, prepare_dataset
from mismatch.data.h5layouts import (
    ACDC_SLICE_LIST,
    LA_CASES_DIR,
    LA_FILE,
    case_lists,
    la2018_layout,
    write_acdc_case,
    write_h5,
    write_la_case,
    write_list,
)
from mismatch.data.presets import data_spec_for
from mismatch.data.synth import write_synthetic_dataset


def _ramp(shape: tuple[int, ...]) -> np.ndarray:
    """Every voxel tells where it came from: 100 a + 10 b + c for index (a, b, c)."""
    a, b, c = np.indices(shape)
    return (100 * a + 10 * b + c).astype(np.float32)


@pytest.fixture(scope="module")
def la_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("la") / "la", "la2018-h5", 5, size=(24, 24), slices=6)


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("acdc") / "acdc", "acdc-h5", 3, size=(24, 20), slices=5)


# ----------------------------------------------------------------------------- reading


def test_la_volume_is_read_with_z_as_the_slice_axis_and_0625_mm_voxels(tmp_path):
    image, label = _ramp((5, 7, 3)), (np.indices((5, 7, 3))[2] == 1).astype(np.uint8)  # (X, Y, Z)
    write_la_case(tmp_path, "c1", image, label)
    case = get_layout("la2018-h5").load_case(tmp_path, "c1")
    assert case.image.shape == (1, 3, 5, 7) and case.label.shape == (3, 5, 7)  # (S, H, W) = (Z, X, Y)
    np.testing.assert_array_equal(case.image[0, 2, 4, 6], image[4, 6, 2])
    np.testing.assert_array_equal(case.label.sum(axis=(1, 2)), [0, 35, 0])  # label only on slice z = 1
    assert case.spacing == (0.625, 0.625, 0.625)
    assert la2018_layout(spacing=(1.0, 0.5, 0.5), name="la-other").load_case(tmp_path, "c1").spacing == (1.0, 0.5, 0.5)
    assert get_layout("la2018-h5").files(tmp_path, "c1") == [tmp_path / LA_CASES_DIR / "c1" / LA_FILE]  # once


def test_acdc_volume_is_read_as_stored_z_y_x(tmp_path):
    image, label = _ramp((3, 5, 4)), (np.indices((3, 5, 4))[0]).astype(np.uint8)  # (Z, Y, X), slice z has label z
    files = write_acdc_case(tmp_path, "patient001_frame01", image, label)
    assert [p.name for p in files] == ["patient001_frame01.h5"] + [f"patient001_frame01_slice_{k}.h5" for k in range(3)]
    case = get_layout("acdc-h5").load_case(tmp_path, "patient001_frame01")
    np.testing.assert_array_equal(case.image[0], image)
    np.testing.assert_array_equal(case.label, label)
    with h5py.File(files[2], "r") as f:  # the slice files hold the 2D slices
        np.testing.assert_array_equal(f["label"][()], label[1])


def test_phantoms_pass_the_check_with_their_lists(la_root, acdc_root):
    la = check_dataset("la2018-h5", la_root)
    assert la.ok and la.cases == [f"la_{i:03d}" for i in range(5)]
    assert case_lists("la2018-h5", la_root) == {"train": la.cases[:4], "test": la.cases[4:]}
    acdc = check_dataset("acdc-h5", acdc_root, foreground_labels=[1, 2, 3])
    assert acdc.ok and len(acdc.cases) == 6
    lists = case_lists("acdc-h5", acdc_root)
    assert lists == {"train": ["patient001_frame01", "patient001_frame10"],
                     "val": ["patient002_frame01", "patient002_frame10"],
                     "test": ["patient003_frame01", "patient003_frame10"]}
    label = get_layout("acdc-h5").load_case(acdc_root, "patient001_frame01").label
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert (acdc_root / ACDC_SLICE_LIST).read_text().split() == [f"patient001_frame{f}_slice_{k}"
                                                                  for f in ("01", "10") for k in range(5)]


# ----------------------------------------------------------------------------- data check


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((4, 4), np.float32), r"dataset 'image' \(image channel\) must be 3D, got shape \(4, 4\)"),
    (np.array([[[b"a"]]]), r"dataset 'image' \(image channel\) is not numeric"),
    (np.full((2, 2, 2), np.nan, np.float32), r"8 NaN or infinite intensities"),
])
def test_a_bad_image_dataset_is_named_with_its_file(tmp_path, image, message):
    (tmp_path / "data").mkdir()
    write_h5(tmp_path / "data" / "v.h5", image, np.zeros((2, 2, 2), np.uint8))
    report = check_dataset("acdc-h5", tmp_path, foreground_labels=[1], allow_empty=True)
    problems = [p for p in report.problems if p.case == "v"]
    assert len(problems) == 1 and problems[0].path == tmp_path / "data" / "v.h5" and re.search(message, problems[0].message)


def _copy(src, dst):
    return shutil.copytree(src, dst)


def test_la_check_names_the_file_of_every_problem_and_checks_the_other_cases(la_root, tmp_path, capsys):
    root = _copy(la_root, tmp_path / "la")
    folder = root / LA_CASES_DIR

    def h5(case: str):
        return folder / case / LA_FILE

    with h5py.File(h5("la_000"), "w") as f:  # no label dataset
        f.create_dataset("image", data=np.zeros((8, 8, 4), np.float32))
    write_h5(h5("la_001"), np.zeros((8, 8, 4), np.float32), np.ones((8, 8, 5), np.uint8))  # shape mismatch
    write_h5(h5("la_002"), np.zeros((8, 8, 4), np.float32), np.full((8, 8, 4), 2, np.uint8))  # label 2
    h5("la_003").write_bytes(b"not an hdf5 file at all")  # corrupt / not HDF5
    write_list(root / "test.list", ["la_004", "la_gone"])  # listed but absent
    (folder / "la_extra").mkdir()  # a folder in no list, and no file in it
    report = check_dataset("la2018-h5", root)
    found = {str(p.path.relative_to(root)): p.message for p in report.problems}
    expected = {
        f"{LA_CASES_DIR}/la_000/{LA_FILE}": r"no dataset 'label'",
        f"{LA_CASES_DIR}/la_001/{LA_FILE}": r"label shape \(8, 8, 5\) differs from image shape \(8, 8, 4\)",
        f"{LA_CASES_DIR}/la_002/{LA_FILE}": r"unexpected label values \[2\]",
        f"{LA_CASES_DIR}/la_003/{LA_FILE}": r"not HDF5, corrupt or truncated",
        f"{LA_CASES_DIR}/la_gone/{LA_FILE}": r"case 'la_gone' is named in test.list but absent",
        f"{LA_CASES_DIR}/la_extra": r"case folder named in no list",
        f"{LA_CASES_DIR}/la_extra/{LA_FILE}": r"missing image channel file",
    }
    assert sorted(found) == sorted(expected)  # one line per problem (a missing file is not also a missing label)
    for path, pattern in expected.items():
        assert re.search(pattern, found[path]), (path, found[path])
    assert "la_004" in report.cases and "la_004" not in report.bad_cases()  # the good case was still checked
    assert main(["data", "check", "la2018-h5", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(expected) and all(line.startswith(str(root)) for line in out)


def test_acdc_check_names_missing_lists_volumes_and_slices(acdc_root, tmp_path):
    root = _copy(acdc_root, tmp_path / "acdc")
    (root / "val.list").unlink()
    (root / "data" / "slices" / "patient001_frame10_slice_3.h5").unlink()
    write_list(root / "test.list", ["patient003_frame01", "patient003_frame10", "patient009_frame01"])
    with h5py.File(root / "data" / "patient001_frame01.h5", "w") as f:  # no image dataset
        f.create_dataset("label", data=np.zeros((5, 24, 20), np.uint8))
    report = check_dataset("acdc-h5", root, foreground_labels=[1, 2, 3])
    found = {str(p.path.relative_to(root)): p.message for p in report.problems}
    assert found == {
        "val.list": "list file not found",
        "data/patient009_frame01.h5": "missing: case 'patient009_frame01' is named in test.list but absent",
        "data/slices/patient001_frame10_slice_3.h5":
            f"missing: slice 'patient001_frame10_slice_3' is named in {ACDC_SLICE_LIST} but absent",
        "data/patient002_frame01.h5": "volume named in no list (train.list, val.list, test.list)",
        "data/patient002_frame10.h5": "volume named in no list (train.list, val.list, test.list)",
        "data/patient001_frame01.h5": "no dataset 'image' (image channel) in the file; it holds ['label']",
    }


# ----------------------------------------------------------------------------- prepare and train


def test_acdc_prepare_refuses_without_a_foreground_choice_and_works_with_one(acdc_root, tmp_path, capsys):
    with pytest.raises(SpecError, match=r"acdc-h5 labels \{1 RV, 2 Myo, 3 LV\} are multi-class: give classes "
                                        r"\(e.g. \[1, 2, 3\]\) for a 4-class task, or foreground_labels"):
        data_spec_for("acdc-h5", acdc_root)
    assert main(["data", "prepare", "acdc-h5", str(acdc_root), str(tmp_path / "p")]) == 2
    assert "multi-class" in capsys.readouterr().err and not (tmp_path / "p").exists()
    assert main(["data", "check", "acdc-h5", str(acdc_root)]) == 0  # checking needs no choice
    result = prepare_dataset(data_spec_for("acdc-h5", acdc_root, overrides={"foreground_labels": [3]}), tmp_path / "lv")
    assert result.cases == 6 and result.samples == 6 * 5


def test_la_prepare_and_a_tiny_trial(la_root, tmp_path):
    from mismatch.trial.run import run_trial

    result = prepare_dataset(data_spec_for("la2018-h5", la_root), tmp_path / "prep")
    layout = get_layout("la2018-h5")
    per_case = {c: int(layout.load_label(la_root, c).any(axis=(1, 2)).sum()) for c in layout.list_cases(la_root)}
    assert (result.cases, result.samples) == (5, sum(per_case.values()))  # the slices with atrium
    assert all(3 < n <= 6 for n in per_case.values())
    spec = load_trial_spec({
        "study": "tiny", "data": {"prepared": str(result.path), "layout": "la2018-h5"},
        "protocol": {"fold": 0, "unlabelled_cases": 1, "validation_cases": 1, "test_cases": 2, "labelled_slices": 2},
        "method": {"name": "sup1", "width": 4},
        "train": {"epochs": 1, "snapshot_k": 1, "device": "cpu", "prediction_maps": 1},
    })
    rows = run_trial(spec).images
    counts = rows["case_id"].value_counts().to_dict()
    assert len(counts) == 2 and all(counts[c] == per_case[c] for c in counts)  # a row per test slice
    assert rows["dice"].between(0, 1).all()
