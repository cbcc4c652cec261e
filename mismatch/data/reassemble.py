"""A test case's volume put back together from its 2D samples (slices or patches).

Per-case metrics (:mod:`mismatch.evaluate_cases`) are measured on this volume. What it holds
(docs/data.md, "Per-case volumes"):

- planes: the case's test slices in slice order, one plane each. Only qualifying slices are
  test slices (more than ``min_foreground`` foreground pixels), so slices without enough
  foreground (above and below the structure, or gaps in it) are absent; planes are stacked
  next to each other, and ``missing_slices`` counts the slices skipped between the first and
  the last plane.
- in-plane: each sample is placed at its offset on the case's (H, W) grid: a full slice at
  (0, 0) with its padding cut off, the centre crop at the centre offset, a corner patch at
  its corner. Where patches overlap their probabilities are averaged. The volume is then cut
  to the bounding box of the covered pixels (the centre crop's window; the whole slice for
  four corners that cover it); pixels inside that box that no sample covers (a
  ``random-corner`` test set, or corners smaller than half the slice) are background in both
  the truth and the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mismatch.data import preprocess as pp
from mismatch.data.recipe import SliceSet
from mismatch.data.volumes import CaseGeometry, Spacing


@dataclass
class CaseVolume:
    """One test case as a volume: ``truth`` uint8 and ``prob`` float32, both (P, h, w).

    ``slice_index`` (P,) is each plane's slice in the case; ``spacing`` the voxel size in mm
    along (planes, rows, columns), from the case's header.
    """

    case_id: str
    truth: np.ndarray
    prob: np.ndarray
    slice_index: np.ndarray
    spacing: Spacing

    @property
    def missing_slices(self) -> int:
        """Slices between the first and last plane that are not planes (closed up in the volume)."""
        if len(self.slice_index) == 0:
            return 0
        return int(self.slice_index[-1] - self.slice_index[0] + 1 - len(self.slice_index))


def patch_offset(patch: str, height: int, width: int, crop_size: int) -> tuple[int, int]:
    """(top, left) of a sample named ``patch`` on a slice of ``height`` x ``width``."""
    if patch == "full":
        return 0, 0
    if patch == "centre":
        return pp.centre_offset(height, width, crop_size)
    return pp.corner_offsets(height, width, crop_size)[patch]


def case_volumes(
    slices: SliceSet, prob: np.ndarray, geometry: dict[str, CaseGeometry], crop_size: int
) -> list[CaseVolume]:
    """Every case of ``slices`` (in order of first appearance) as a :class:`CaseVolume`.

    ``prob`` (N, H, W) is the foreground probability of each sample; ``geometry`` gives each
    case's grid (S, H, W) and spacing; ``crop_size`` is the recipe's patch size.
    """
    order = list(dict.fromkeys(slices.case_ids))
    ids = np.asarray(slices.case_ids, dtype=object)
    return [_case_volume(case, np.flatnonzero(ids == case), slices, prob, geometry[case], crop_size) for case in order]


def _case_volume(case: str, rows: np.ndarray, slices: SliceSet, prob: np.ndarray, geometry: CaseGeometry,
                 crop_size: int) -> CaseVolume:
    planes = np.unique(slices.slice_index[rows])  # ascending
    _, height, width = geometry.shape
    total = np.zeros((len(planes), height, width), np.float64)  # summed probability
    count = np.zeros((len(planes), height, width), np.int32)  # samples covering each pixel
    truth = np.zeros((len(planes), height, width), np.uint8)
    for i in rows:
        plane = int(np.searchsorted(planes, slices.slice_index[i]))
        top, left = patch_offset(slices.patch[i], height, width, crop_size)
        h, w = min(height - top, prob.shape[1]), min(width - left, prob.shape[2])  # full slices: cut the padding
        window = (plane, slice(top, top + h), slice(left, left + w))
        total[window] += prob[i, :h, :w]
        count[window] += 1
        truth[window] = slices.labels[i, :h, :w]
    mean = np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)
    box = _covered_box(count.any(axis=0))
    return CaseVolume(case, truth[:, box[0], box[1]], mean[:, box[0], box[1]], planes.astype(np.int64),
                      geometry.spacing)


def _covered_box(covered: np.ndarray) -> tuple[slice, slice]:
    """Row and column slices of the bounding box of the covered pixels of an (H, W) mask."""
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
