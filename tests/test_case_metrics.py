"""Per-case results: surface metrics in mm on analytic shapes, empty conventions, reassembled
volumes, the cases table through the store and through a real trial."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mismatch.config import load_trial_spec
from mismatch.data import preprocess as pp
from mismatch.data.reassemble import CaseVolume, case_volumes
from mismatch.data.recipe import SliceSet
from mismatch.data.synth import make_phantom
from mismatch.data.volumes import CaseGeometry
from mismatch.results import IDENTITY, table_columns
from mismatch.study.store import read_table, write_result, write_trial
from mismatch.trial.cases import case_metrics, case_rows, surface_metrics, surface_metrics_lib
from mismatch.trial.run import run_trial

SPACING = (2.0, 0.5, 0.5)  # mm along (z = slices, y = rows, x = columns)


def _box_pair(shift: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A 3 x 3 x 30 voxel box and the same box moved ``shift`` voxels along x."""
    truth = np.zeros((7, 9, 40), bool)
    truth[2:5, 3:6, 2:32] = True
    return np.roll(truth, shift, axis=2), truth


def test_box_shifted_along_x_has_the_surface_distances_one_can_count():
    """Box of 3 (z) x 3 (y) x 30 (x) voxels, moved 3 voxels = 1.5 mm along x.

    Its 242 surface voxels (MONAI's: the mask minus its erosion) and their distance to the
    other box's surface, the same both ways by symmetry:
    - the 9 voxels of the trailing face: 3 voxels along x, 1.5 mm;
    - the 8 voxels around the box at 1 and 2 voxels behind the other box's start: 1.0 and 0.5 mm;
    - the 8 x 27 voxels around the box further along: on the other surface, 0 mm;
    - the 1 inner voxel of the leading face: 1 voxel (0.5 mm) from the other box's side.
    So 216 x 0, 9 x 0.5, 8 x 1.0 and 9 x 1.5 mm.
    """
    pred, truth = _box_pair()
    got = surface_metrics(pred, truth, SPACING, tolerance_mm=1.0)
    # HD95: the 0.95 * 241 = 228.95-th sorted distance lies among the eight 1.0 mm values (225..232)
    assert got["hd95_mm"] == pytest.approx(1.0, abs=1e-6)
    assert got["assd_mm"] == pytest.approx((9 * 0.5 + 8 * 1.0 + 9 * 1.5) / 242, abs=1e-6)
    assert got["nsd"] == pytest.approx((216 + 9 + 8) / 242, abs=1e-6)  # within 1 mm: all but the trailing face
    assert surface_metrics(pred, truth, SPACING, tolerance_mm=0.5)["nsd"] == pytest.approx(225 / 242, abs=1e-6)
    assert surface_metrics(pred, truth, SPACING, tolerance_mm=1.5)["nsd"] == 1.0
    # the same boxes read with the axes' spacings the other way round: 3 voxels along x are 6 mm
    assert surface_metrics(pred, truth, SPACING[::-1], tolerance_mm=1.0)["nsd"] < got["nsd"]


def _sphere(radius_mm: float, shape: tuple[int, int, int], centre: tuple[float, float, float]) -> np.ndarray:
    z, y, x = np.indices(shape)
    dist = np.sqrt(sum(((a - c) * s) ** 2 for a, c, s in zip((z, y, x), centre, SPACING)))
    return dist <= radius_mm


@pytest.mark.parametrize(("axis", "shift", "mm"), [(2, 3, 1.5), (0, 1, 2.0)], ids=["x-3-voxels", "z-1-slice"])
def test_sphere_shifted_by_whole_voxels(axis, shift, mm):
    """A voxelised sphere and its exact copy ``shift`` voxels on: every surface voxel has its
    copy ``mm`` away, and the extreme voxels facing away from the shift have nothing nearer,
    so the largest surface distance is exactly ``mm``: NSD at ``mm`` is 1, below it less,
    HD95 at most ``mm``, and the mean distance strictly between 0 and ``mm``."""
    truth = _sphere(6.0, (13, 40, 44), (6, 20, 20))
    pred = np.roll(truth, shift, axis=axis)
    got = surface_metrics(pred, truth, SPACING, tolerance_mm=mm)
    assert got["nsd"] == 1.0
    assert surface_metrics(pred, truth, SPACING, tolerance_mm=mm - 0.01)["nsd"] < 1.0
    assert 0 < got["hd95_mm"] <= mm + 1e-6
    assert 0 < got["assd_mm"] < mm


def test_empty_conventions():
    empty = np.zeros((4, 6, 8), bool)
    blob = empty.copy()
    blob[1:3, 2:4, 2:6] = True
    diagonal = math.sqrt((4 * 2.0) ** 2 + (6 * 0.5) ** 2 + (8 * 0.5) ** 2)
    both = surface_metrics(empty, empty, SPACING, 1.0)
    assert both["nsd"] == 1.0 and math.isnan(both["hd95_mm"]) and math.isnan(both["assd_mm"])
    for pred, truth in ((empty, blob), (blob, empty)):  # missed structure; structure where there is none
        one = surface_metrics(pred, truth, SPACING, 1.0)
        assert one == {"hd95_mm": pytest.approx(diagonal), "assd_mm": pytest.approx(diagonal), "nsd": 0.0}
    row = case_metrics(CaseVolume("c", blob.astype(np.uint8), np.zeros(blob.shape, np.float32), np.arange(4), SPACING),
                       1.0, "lib")
    assert row["dice"] == row["iou"] == 0.0 and row["pred_voxels"] == 0 and row["fg_voxels"] == 16
    assert row["hd95_mm"] == row["assd_mm"] == pytest.approx(diagonal) and row["nsd"] == 0.0


# ----------------------------------------------------------------------------- reassembly


def _label_volume() -> np.ndarray:
    label = np.zeros((6, 10, 12), np.uint8)  # (S, H, W)
    label[1:5, 2:8, 3:10] = 1
    label[3, 0, 0] = 1
    return label


def _patches(label: np.ndarray, slices: list[int], patches: list[str], size: int) -> SliceSet:
    """The samples a trial would get: ``patches`` of each of ``slices`` (slice-major)."""
    h, w = label.shape[1:]
    per = len(patches) // len(slices)
    labels, index = [], []
    for k, name in enumerate(patches):
        s = slices[k // per]
        top, left = (0, 0) if name == "full" else (pp.centre_offset(h, w, size) if name == "centre"
                                                   else pp.corner_offsets(h, w, size)[name])
        part = label[s] if name == "full" else pp.crop(label[s], top, left, size)
        labels.append(pp.pad_to_multiple(part, 8, 0) if name == "full" else part)
        index.append(s)
    stack = np.stack(labels)
    return SliceSet(np.zeros((len(stack), 1, *stack.shape[1:]), np.float32), stack, ["a"] * len(stack),
                    np.array(index, np.int64), list(patches))


GEOMETRY = {"a": CaseGeometry((6, 10, 12), SPACING)}


def test_overlapping_corners_put_the_case_back_together():
    label, slices = _label_volume(), [1, 3, 4]
    samples = _patches(label, slices, [c for _ in slices for c in pp.CORNERS], size=7)  # 7 + 7 > 10, 12: overlaps
    prob = samples.labels.astype(np.float32) * 0.9
    (vol,) = case_volumes(samples, prob, GEOMETRY, crop_size=7)
    np.testing.assert_array_equal(vol.truth, label[slices])
    np.testing.assert_allclose(vol.prob, label[slices] * 0.9, rtol=1e-6)  # overlaps averaged, not summed
    assert vol.slice_index.tolist() == slices and vol.missing_slices == 1 and vol.spacing == SPACING


def test_full_slices_lose_their_padding_and_centre_crops_keep_their_window():
    label = _label_volume()
    full = _patches(label, [1, 2], ["full", "full"], size=0)
    assert full.labels.shape[1:] == (16, 16)
    prob = np.ones(full.labels.shape, np.float32)  # foreground everywhere, padding included
    (vol,) = case_volumes(full, prob, GEOMETRY, crop_size=0)
    assert vol.prob.shape == (2, 10, 12) and vol.missing_slices == 0
    assert case_metrics(vol, 1.0, "lib")["pred_voxels"] == 2 * 10 * 12
    centre = _patches(label, [2], ["centre"], size=6)
    (vol,) = case_volumes(centre, centre.labels.astype(np.float32), GEOMETRY, crop_size=6)
    top, left = pp.centre_offset(10, 12, 6)
    np.testing.assert_array_equal(vol.truth[0], label[2, top:top + 6, left:left + 6])


def test_a_random_corner_per_slice_leaves_the_rest_background():
    label = _label_volume()
    samples = _patches(label, [1, 2], ["top-left", "bottom-right"], size=6)
    (vol,) = case_volumes(samples, samples.labels.astype(np.float32), GEOMETRY, crop_size=6)
    assert vol.truth.shape == (2, 10, 12)
    np.testing.assert_array_equal(vol.truth[0, :6, :6], label[1, :6, :6])
    assert vol.truth[0, 6:, :].sum() == 0 and vol.truth[0, :, 6:].sum() == 0  # uncovered: background
    assert case_metrics(vol, 1.0, "lib")["dice"] == 1.0


# ----------------------------------------------------------------------------- rows, store, trial


def _case_frame() -> pd.DataFrame:
    label = _label_volume()
    samples = _patches(label, [1, 2, 3], ["full"] * 3, size=0)
    prob = np.roll(samples.labels, 1, axis=2).astype(np.float32)
    ident = dict(zip(IDENTITY, [2, "s", "t1", "sup1", "unet", 0.0, 5, 0, 0, 0, 0, "fp"], strict=True))
    frame = case_rows(ident, samples, prob, GEOMETRY, crop_size=0, tolerance_mm=1.0)
    assert frame is not None
    return frame


def test_case_rows_follow_the_schema_and_round_trip_through_the_store(tmp_path):
    frame = _case_frame()
    assert list(frame.columns) == list(table_columns("cases")) and len(frame) == 1
    row = frame.iloc[0]
    assert row["surface_metrics_lib"] == surface_metrics_lib() and row["surface_metrics_lib"].startswith("monai ")
    assert row["hd95_mm"] == pytest.approx(0.5, abs=1e-6)  # moved one column: 0.5 mm at most
    assert (row["spacing_z_mm"], row["spacing_y_mm"], row["spacing_x_mm"]) == SPACING
    write_trial(str(tmp_path), "s", "t1", {"trial_id": "t1", "status": "completed"}, cases=frame)
    back = read_table(str(tmp_path), "s", "cases")
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_a_trial_writes_one_case_row_per_test_case_in_mm(tmp_path, tiny_dict):
    spec = load_trial_spec(tiny_dict(train={"epochs": 1, "snapshot_k": 1, "nsd_tolerance_mm": 12.5}))
    result = run_trial(spec)
    write_result(str(tmp_path), result)
    cases = read_table(str(tmp_path), "tiny", "cases")
    test_cases = sorted(set(result.images["case_id"]))
    assert sorted(cases["case_id"]) == test_cases and len(test_cases) == spec.protocol.test_cases
    assert cases["trial_id"].eq(result.trial["trial_id"]).all()
    for _, row in cases.iterrows():
        _, _, affine = make_phantom("vessels", (32, 32), 10, 0, int(row["case_id"].rsplit("_", 1)[1]))
        assert (row["spacing_z_mm"], row["spacing_y_mm"], row["spacing_x_mm"]) == pytest.approx(
            (affine[2, 2], affine[0, 0], affine[1, 1]))
        fg = result.images.loc[result.images["case_id"] == row["case_id"], "fg_pixels"].sum()
        assert row["fg_voxels"] == fg > 0  # full slices: the case's test slices, padding cut off
    assert cases[["dice", "iou", "nsd"]].stack().between(0, 1).all()
    assert (cases["hd95_mm"] >= 0).all() and (cases["assd_mm"] >= 0).all() and cases["nsd_tolerance_mm"].eq(12.5).all()


def test_the_nsd_tolerance_changes_the_trial_id_only_when_set_away_from_its_default(tiny_dict):
    default = load_trial_spec(tiny_dict()).trial_id()
    assert load_trial_spec(tiny_dict(train={"nsd_tolerance_mm": 1.0})).trial_id() == default
    assert load_trial_spec(tiny_dict(train={"nsd_tolerance_mm": 2.0})).trial_id() != default
