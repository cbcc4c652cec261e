"""Per-test-case results: overlap and surface distances in millimetres on reassembled volumes.

Each test case's volume is put back together from its test slices and patches
(:func:`mismatch.data.reassemble.case_volumes`), thresholded at the schema's ``THRESHOLD``,
and measured with MONAI's reference implementations at the case's voxel spacing from its
header: ``compute_hausdorff_distance`` (95th percentile, symmetric),
``compute_average_surface_distance`` (symmetric) and ``compute_surface_dice`` (normalised
surface Dice at a tolerance in mm). Masks with an empty side follow the schema's empty
conventions (:func:`mismatch.results.empty_surface_values`); MONAI is not called for them.
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
        "spacing_z_mm": volume.spacing[0], "spacing_y_mm": volume.spacing[1], "spacing_x_mm": volume.spacing[2],
        "n_slices": len(volume.slice_index), "missing_slices": volume.missing_slices,
        "surface_metrics_lib": lib,
    }


def case_rows(ident: dict[str, Any], slices: SliceSet, prob: np.ndarray, geometry: dict[str, CaseGeometry],
              crop_size: int, tolerance_mm: float) -> pd.DataFrame | None:
    """The cases table of a trial: one row per test case (None for an empty test set)."""
    lib = surface_metrics_lib()
    volumes = case_volumes(slices, prob, geometry, crop_size)
    return rows.case_rows(ident, [case_metrics(v, tolerance_mm, lib) for v in volumes])
