"""Preparation steps, each a small pure function on numpy arrays.

Arrays keep the spatial axes last: a case image is (C, S, H, W), a label (S, H, W), a slice
image (C, H, W). Crops and padding act on the last two axes of whatever they are given, so
the same function crops a slice, a stack of slices or a whole volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mismatch.data.errors import DataError

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def clip_intensity(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip intensities (e.g. Hounsfield units) to ``[low, high]``."""
    if low > high:
        raise DataError(f"clip bounds must be ordered, got ({low}, {high})")
    return np.clip(image, low, high)


def zscore(image: np.ndarray, nonzero: bool = False, eps: float = 1e-8) -> np.ndarray:
    """Z-score each channel of ``image`` (C, ...) over the whole case.

    With ``nonzero`` the mean and standard deviation of a channel are taken over its
    non-zero voxels only (the brain in skull-stripped MR) and zero voxels stay 0. A
    constant channel is only centred. Statistics are computed in float64.
    """
    out = np.empty(image.shape, dtype=np.float32)
    for c, channel in enumerate(image):
        mask = channel != 0 if nonzero else None
        values = channel[mask] if nonzero else channel
        if values.size == 0:
            out[c] = channel
            continue
        mean = values.mean(dtype=np.float64)
        std = values.std(dtype=np.float64)
        scaled = (channel - mean) / (std if std > eps else 1.0)
        out[c] = np.where(mask, scaled, 0.0) if nonzero else scaled
    return out


def normalise(image: np.ndarray, how: str) -> np.ndarray:
    """Apply ``DataSpec.normalise``: ``"zscore"``, ``"zscore-nonzero"`` or ``"none"``."""
    if how == "zscore":
        return zscore(image)
    if how == "zscore-nonzero":
        return zscore(image, nonzero=True)
    if how == "none":
        return image.astype(np.float32, copy=False)
    raise DataError(f"unknown normalisation {how!r}")


def foreground(label: np.ndarray, foreground_labels: Sequence[int]) -> np.ndarray:
    """Binary foreground (uint8): 1 where ``label`` is one of ``foreground_labels``."""
    return np.isin(label, np.asarray(foreground_labels)).astype(np.uint8)


def class_map(label: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Class indices (uint8): ``i + 1`` where ``label`` is ``classes[i]``, 0 elsewhere."""
    lookup = np.zeros(max(int(label.max(initial=0)), *classes) + 1, dtype=np.uint8)
    lookup[np.asarray(classes)] = np.arange(1, len(classes) + 1, dtype=np.uint8)
    return lookup[np.clip(label, 0, None).astype(np.int64)]


def label_map(label: np.ndarray, foreground_labels: Sequence[int], classes: Sequence[int] | None) -> np.ndarray:
    """The training label of a case: class indices 0..C-1 when ``classes`` is given (multi-class),
    else the binary foreground of ``foreground_labels``."""
    return foreground(label, foreground_labels) if classes is None else class_map(label, classes)


def qualifying_slices(mask: np.ndarray, min_foreground: int) -> np.ndarray:
    """Indices (int64, ascending) of slices of ``mask`` (S, H, W) with MORE than
    ``min_foreground`` foreground pixels (pixels of any class > 0)."""
    counts = np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1)
    return np.flatnonzero(counts > min_foreground).astype(np.int64)


def crop(array: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """The ``size`` x ``size`` window at (``top``, ``left``) of the last two axes."""
    h, w = array.shape[-2:]
    if not (0 <= top and top + size <= h and 0 <= left and left + size <= w):
        raise DataError(f"crop {size}x{size} at ({top}, {left}) does not fit in {h}x{w}")
    return array[..., top : top + size, left : left + size]


def corner_offsets(height: int, width: int, size: int) -> dict[str, tuple[int, int]]:
    """(top, left) of the four corner patches, in the order of :data:`CORNERS`."""
    _check_fits(height, width, size)
    bottom, right = height - size, width - size
    return {
        "top-left": (0, 0),
        "top-right": (0, right),
        "bottom-left": (bottom, 0),
        "bottom-right": (bottom, right),
    }


def centre_offset(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the centre patch; an odd margin puts the extra pixel after the patch."""
    _check_fits(height, width, size)
    return (height - size) // 2, (width - size) // 2


def _check_fits(height: int, width: int, size: int) -> None:
    if size > height or size > width:
        raise DataError(f"crop_size {size} is larger than the slice ({height}x{width})")


def pad_to_multiple(
    array: np.ndarray, multiple: int = 8, value: float | np.ndarray = 0, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Pad the last two axes at the bottom and right up to a multiple of ``multiple``.

    ``shape`` (H, W) pads to at least that size instead (rounded up to the multiple), so
    slices of different cases can share one array. ``value`` is a scalar, or one value per
    channel for arrays (..., C, H, W) (e.g. the per-channel minimum of the image).
    Padding at the bottom/right keeps pixel coordinates of the original slice unchanged.
    """
    h, w = array.shape[-2:]
    target_h, target_w = shape if shape is not None else (h, w)
    new_h, new_w = round_up(max(h, target_h), multiple), round_up(max(w, target_w), multiple)
    if (new_h, new_w) == (h, w):
        return array
    out = np.empty(array.shape[:-2] + (new_h, new_w), dtype=array.dtype)
    fill = np.asarray(value, dtype=array.dtype)
    out[...] = fill if fill.ndim == 0 else fill.reshape(-1, 1, 1)  # per channel, (C, 1, 1)
    out[..., :h, :w] = array
    return out


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``n``."""
    return -(-n // multiple) * multiple


def channel_minimum(image: np.ndarray) -> np.ndarray:
    """Minimum of each channel of ``image`` (C, ...): the pad value of a padded image."""
    return image.reshape(image.shape[0], -1).min(axis=1)


def context_stack(image: np.ndarray, slices: np.ndarray, context: int) -> np.ndarray:
    """Slices of ``image`` (C, S, H, W) as (N, C * context, H, W).

    ``context`` 1 gives the slice itself; 3 gives, per channel (modality), the slices
    [s-1, s, s+1] (channel order: modality-major), repeating the edge slice at either end
    of the volume.
    """
    if context % 2 != 1:
        raise DataError(f"context must be odd, got {context}")
    c, s = image.shape[:2]
    half = context // 2
    offsets = np.arange(-half, half + 1)
    index = np.clip(np.asarray(slices)[:, None] + offsets[None, :], 0, s - 1)  # (N, context)
    stacked = image[:, index]  # (C, N, context, H, W)
    stacked = stacked.transpose(1, 0, 2, 3, 4)  # (N, C, context, H, W)
    return np.ascontiguousarray(stacked.reshape(len(index), c * context, *image.shape[2:]))
