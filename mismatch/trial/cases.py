"""Per-test-case results: overlap and surface distances in millimetres on reassembled volumes.

Each test case's volume is put back together from its test slices and patches
(:func:`mismatch.data.reassemble.case_volumes`), thresholded at the schema's ``THRESHOLD``,
and measured with MONAI's reference implementations at the case's voxel spacing from its
header: ``compute_hausdorff_distance`` (95th percentile, symmetric),
``compute_average_surface_distance`` (symmetric) and ``compute_surface_dice`` (normalised
surface Dice at a tolerance in mm). Masks with an empty side follow the schema's empty
conventions (:func:`mismatch.results.empty_surface_values`); MONAI is not called for them.

A task with C > 2 classes reassembles each class's probability, predicts the argmax
(:func:`mismatch.results.class_prediction`) and measures each foreground class as its own
binary mask (:func:`class_case_metrics`, the classes table's case rows); the case row holds
the mean over foreground classes of ``dice``, ``iou``, ``hd95_mm``, ``assd_mm`` and ``nsd``
(NaN skipped: a class absent from both truth and prediction has no surface distance), and
``fg_voxels`` / ``pred_voxels`` count voxels of any foreground class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from mismatch import results
from mismatch.data import SliceSet
from mismatch.data.reassemble import CaseVolume, case_volumes
from mismatch.data.volumes import CaseGeometry
from mismatch.results import rows
from mismatch.results.schema import HD_PERCENTILE, THRESHOLD


def surface_metrics_lib() -> str:
    """The library that computes the surface metrics, with its version (``monai 1.6.1``)."""
    import monai

    return f"monai {monai.__version__}"


def diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the diagonal of a volume of ``shape`` voxels at ``spacing``."""
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))


def surface_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
                    tolerance_mm: float) -> dict[str, float]:
    """``hd95_mm``, ``assd_mm`` and ``nsd`` of two binary masks of the same shape (2D or 3D).

    ``spacing`` is the voxel size in mm along the masks' axes; ``tolerance_mm`` the distance
    within which a surface point of one mask counts as on the other's surface (NSD).
    """
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    pred, truth = pred.astype(bool), truth.astype(bool)
    fixed = results.empty_surface_values(int(truth.sum()), int(pred.sum()), diagonal_mm(truth.shape, spacing))
    if fixed is not None:
        return fixed
    y_pred = torch.from_numpy(pred[None, None].astype(np.float32))  # (1, 1, *spatial): one image, one class
    y = torch.from_numpy(truth[None, None].astype(np.float32))
    space = [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI 1.5-1.6 pass a deprecated argument to their own get_mask_edges; nothing to act on here
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=HD_PERCENTILE, spacing=space)
        asd = compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=space)
        nsd = compute_surface_dice(y_pred, y, class_thresholds=[float(tolerance_mm)], include_background=True,
                                   spacing=space)
    return {"hd95_mm": float(hd[0, 0]), "assd_mm": float(asd[0, 0]), "nsd": float(nsd[0, 0])}


def case_metrics(volume: CaseVolume, tolerance_mm: float, lib: str) -> dict[str, Any]:
    """The cases row values of one reassembled test case (without the identity)."""
    pred = volume.prob >= THRESHOLD
    counts = results.confusion(volume.prob, volume.truth)
    iou, dice = results.iou_dice(counts["tp"], counts["fp"], counts["fn"])
    return {
        "case_id": volume.case_id, "dice": dice, "iou": iou,
        **surface_metrics(pred, volume.truth, volume.spacing, tolerance_mm),
        "nsd_tolerance_mm": float(tolerance_mm),
        "fg_voxels": counts["tp"] + counts["fn"], "pred_voxels": counts["tp"] + counts["fp"],
        **geometry_values(volume, lib),
    }


CLASS_CASE_MEANS = ("dice", "iou", "hd95_mm", "assd_mm", "nsd")
"""The case-row metrics that a C > 2 task fills with the mean over foreground classes."""


def class_case_metrics(pred: np.ndarray, truth: np.ndarray, num_classes: int, spacing: Sequence[float],
                       tolerance_mm: float) -> list[dict[str, Any]]:
    """Each foreground class 1..C-1 of predicted and true class maps (same shape, 2D or 3D):
    ``class_index``, voxel counts, IoU, Dice, two-class mean Dice and the surface metrics in mm."""
    out = []
    for k in range(1, num_classes):
        counts = results.class_counts(pred, truth, k)
        out.append({"class_index": k, **counts, **surface_metrics(pred == k, truth == k, spacing, tolerance_mm)})
    return out


def multiclass_case_metrics(case_id: str, pred: np.ndarray, truth: np.ndarray, num_classes: int,
                            spacing: Sequence[float], tolerance_mm: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A C > 2 case's CASE_METRICS (means over foreground classes) and its per-class metrics."""
    per_class = class_case_metrics(pred, truth, num_classes, spacing, tolerance_mm)
    means = results.foreground_mean(per_class, CLASS_CASE_MEANS)
    row = {"case_id": case_id, **means, "nsd_tolerance_mm": float(tolerance_mm),
           "fg_voxels": int(np.count_nonzero(truth)), "pred_voxels": int(np.count_nonzero(pred))}
    return row, per_class


def geometry_values(volume: CaseVolume, lib: str) -> dict[str, Any]:
    """The CASE_GEOMETRY and CASE_LIB values of a case row."""
    return {"spacing_z_mm": volume.spacing[0], "spacing_y_mm": volume.spacing[1], "spacing_x_mm": volume.spacing[2],
            "n_slices": len(volume.slice_index), "missing_slices": volume.missing_slices,
            "surface_metrics_lib": lib}


def class_volumes(slices: SliceSet, prob: np.ndarray, geometry: dict[str, CaseGeometry],
                  crop_size: int) -> list[tuple[CaseVolume, np.ndarray]]:
    """Each case reassembled from class probabilities ``prob`` (N, C, H, W): the volume (its
    ``prob`` the background's) and the predicted class map (P, h, w)."""
    per_class = [case_volumes(slices, prob[:, k], geometry, crop_size) for k in range(prob.shape[1])]
    out = []
    for volumes in zip(*per_class):
        stacked = np.stack([v.prob for v in volumes])  # (C, P, h, w)
        out.append((volumes[0], results.class_prediction(stacked)))
    return out


def case_rows(ident: dict[str, Any], slices: SliceSet, prob: np.ndarray, geometry: dict[str, CaseGeometry],
              crop_size: int, tolerance_mm: float) -> pd.DataFrame | None:
    """The cases table of a trial: one row per test case (None for an empty test set)."""
    return case_tables(ident, slices, prob, geometry, crop_size, tolerance_mm)[0]


def case_tables(ident: dict[str, Any], slices: SliceSet, prob: np.ndarray, geometry: dict[str, CaseGeometry],
                crop_size: int, tolerance_mm: float, class_names: Sequence[str] = ("foreground",),
                ) -> tuple[pd.DataFrame | None, list[dict[str, Any]]]:
    """The cases table of a trial and, for ``prob`` (N, C, H, W) with C > 2, the case-level
    records of the classes table (none for a binary task)."""
    lib = surface_metrics_lib()
    if prob.ndim != slices.labels.ndim + 1:
        volumes = case_volumes(slices, prob, geometry, crop_size)
        return rows.case_rows(ident, [case_metrics(v, tolerance_mm, lib) for v in volumes]), []
    cases, records = [], []
    for volume, pred in class_volumes(slices, prob, geometry, crop_size):
        row, per_class = multiclass_case_metrics(volume.case_id, pred, volume.truth, prob.shape[1], volume.spacing,
                                                 tolerance_mm)
        cases.append({**row, **geometry_values(volume, lib)})
        key = rows.case_class_key(volume.case_id)
        records += [rows.class_record("case", key, class_names, c) for c in per_class]
    return rows.case_rows(ident, cases), records
