"""3D trials: the prepared whole volumes of each role, and the patch sampler.

With ``DataSpec.spatial_dims: 3`` a trial reads whole volumes instead of slices
(:func:`load_volume_sets`, called by :func:`mismatch.data.trial_data.load_trial_data`):

- every case of a role is loaded whole through its layout (``msd``, a synthetic phantom,
  ``la2018-h5``, ...), clipped and normalised per case exactly as the 2D recipe does
  (:func:`mismatch.data.recipe.prepare_image`), and its label reduced to the foreground mask;
- the labelled budget is whole cases (``protocol.labelled_cases``); the unlabelled volumes are
  the fold's other training cases (their labels are zeroed: never exposed);
- training volumes (labelled, unlabelled) smaller than ``patch_size`` along an axis are padded
  at the END of that axis (voxel coordinates unchanged) with the case's channel minimum in the
  image and background in the label; validation and test volumes keep their own grid
  (sliding-window inference pads a window that does not fit and crops its output back).

Patches (:func:`sample_patches`): with probability ``patch_foreground`` a labelled patch is
centred on a foreground voxel drawn uniformly from the volume's foreground (its start clipped
so the patch fits), else its start is uniform over every position where it fits; unlabelled
patches are always uniform. Every draw comes from the generator the caller passes, so the
training loop's seeded stream gives the same patches again on a resumed trial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mismatch.config import DataSpec
from mismatch.data import preprocess as pp
from mismatch.data.errors import DataError
from mismatch.data.layouts import Layout
from mismatch.data.recipe import prepare_image
from mismatch.data.splits import ROLES, Splits
from mismatch.data.volumes import CaseGeometry, Spacing

__all__ = [
    "VolumeSet", "VolumeWindow", "crop_patch", "load_volume_sets", "pad_to_patch", "patch_start", "sample_patches",
]

Shape3 = tuple[int, int, int]
#: Roles whose volumes are cut into training patches (and so padded to the patch size).
TRAINING_ROLES = ("labelled", "unlabelled")


@dataclass(frozen=True)
class VolumeWindow:
    """A 3D trial's patch and sliding-window settings (from its :class:`DataSpec`).

    ``size`` (D, H, W) is the training patch and the inference window; ``foreground`` the
    probability that a labelled patch is centred on foreground; ``overlap`` and ``mode`` are
    passed to MONAI's ``sliding_window_inference``.
    """

    size: Shape3
    foreground: float = 0.5
    overlap: float = 0.5
    mode: str = "gaussian"

    @classmethod
    def from_spec(cls, data: DataSpec) -> VolumeWindow:
        """The window of a 3D data spec (``patch_size`` must be set)."""
        if data.patch_size is None:
            raise DataError("a 3D trial needs data.patch_size")
        return cls(tuple(data.patch_size), data.patch_foreground, data.sw_overlap, data.sw_mode)  # type: ignore[arg-type]


@dataclass
class VolumeSet:
    """Prepared whole volumes of one role (the 3D counterpart of a :class:`SliceSet`).

    ``images[i]`` float32 (C, D, H, W), ``labels[i]`` uint8 (D, H, W) foreground mask (zeros
    for the unlabelled role); ``shapes[i]`` the case's grid before any padding and
    ``spacing[i]`` its voxel size in mm along (D, H, W). Volumes may differ in shape, so they
    are lists; ``len(set.images)`` counts volumes as ``len(slices.images)`` counts slices.
    """

    images: list[np.ndarray]
    labels: list[np.ndarray]
    case_ids: list[str]
    shapes: list[Shape3]
    spacing: list[Spacing]
    _foreground: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.images)
        if {len(self.labels), len(self.case_ids), len(self.shapes), len(self.spacing)} != {n}:
            raise ValueError("VolumeSet fields disagree in length")
        for image, label in zip(self.images, self.labels):
            if image.ndim != 4 or label.shape != image.shape[1:]:
                raise ValueError(f"a volume must be (C, D, H, W) with a (D, H, W) label, got {image.shape}, {label.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        """Image channels (0 for an empty set)."""
        return int(self.images[0].shape[0]) if self.images else 0

    def foreground_voxels(self, i: int) -> np.ndarray:
        """Flat indices of volume ``i``'s foreground voxels (computed once, then kept)."""
        if i not in self._foreground:
            self._foreground[i] = np.flatnonzero(self.labels[i]).astype(np.int64)
        return self._foreground[i]

    @classmethod
    def empty(cls) -> VolumeSet:
        """A set with no volumes."""
        return cls([], [], [], [], [])


def pad_to_patch(image: np.ndarray, label: np.ndarray, size: Shape3) -> tuple[np.ndarray, np.ndarray]:
    """Pad image (C, D, H, W) and label (D, H, W) at the end of each axis shorter than ``size``:
    the image with its channel minimum, the label with background (0)."""
    target = tuple(max(n, s) for n, s in zip(label.shape, size))
    if target == label.shape:
        return image, label
    widths = [(0, t - n) for n, t in zip(label.shape, target)]
    out = np.empty((image.shape[0], *target), dtype=image.dtype)
    minimum = pp.channel_minimum(image)
    for c, channel in enumerate(image):
        out[c] = np.pad(channel, widths, constant_values=minimum[c])
    return out, np.pad(label, widths, constant_values=0)


def patch_start(shape: Shape3, size: Shape3, rng: np.random.Generator, foreground: np.ndarray | None = None,
                foreground_prob: float = 0.0) -> Shape3:
    """The (d, h, w) start of a patch of ``size`` in a volume of ``shape`` (each axis >= size).

    One uniform draw decides the kind: below ``foreground_prob`` (and with foreground voxels,
    flat indices ``foreground``) the patch is centred on a foreground voxel drawn uniformly,
    its start clipped to fit; otherwise the start is uniform over every fitting position.
    """
    limit = np.array(shape) - np.array(size)  # last fitting start per axis
    if np.any(limit < 0):
        raise DataError(f"patch {tuple(size)} does not fit in a volume of {tuple(shape)}: pad it first")
    centred = rng.random() < foreground_prob
    if centred and foreground is not None and len(foreground):
        voxel = np.array(np.unravel_index(foreground[rng.integers(len(foreground))], shape))
        start = np.clip(voxel - np.array(size) // 2, 0, limit)
    else:
        start = np.array([rng.integers(0, m + 1) for m in limit])
    return tuple(int(s) for s in start)  # type: ignore[return-value]


def crop_patch(array: np.ndarray, start: Sequence[int], size: Shape3) -> np.ndarray:
    """The ``size`` window at ``start`` of the last three axes of ``array``."""
    d, h, w = start
    return array[..., d : d + size[0], h : h + size[1], w : w + size[2]]


def sample_patches(volumes: VolumeSet, index: np.ndarray, size: Shape3, rng: np.random.Generator,
                   foreground_prob: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One patch of each volume ``index[k]`` in order: images (B, C, *size) float32 and
    labels (B, *size) uint8. ``foreground_prob`` 0 gives uniform patches (the unlabelled role)."""
    images = np.empty((len(index), volumes.channels, *size), dtype=np.float32)
    labels = np.empty((len(index), *size), dtype=np.uint8)
    for k, i in enumerate(index):
        label = volumes.labels[i]
        fg = volumes.foreground_voxels(i) if foreground_prob > 0 else None
        start = patch_start(label.shape, size, rng, fg, foreground_prob)  # type: ignore[arg-type]
        images[k] = crop_patch(volumes.images[i], start, size)
        labels[k] = crop_patch(label, start, size)
    return images, labels


def load_volume_sets(layout: Layout, root: Path, data: DataSpec, splits: Splits) -> dict[str, VolumeSet]:
    """The prepared volumes of every role of ``splits`` (training roles padded to the patch)."""
    window = VolumeWindow.from_spec(data)
    return {role: _role_volumes(layout, root, data, splits[role], window.size if role in TRAINING_ROLES else None,
                                expose_labels=role != "unlabelled") for role in ROLES}


def _role_volumes(layout: Layout, root: Path, data: DataSpec, cases: Sequence[str], pad: Shape3 | None,
                  expose_labels: bool) -> VolumeSet:
    out = VolumeSet.empty()
    for case_id in cases:
        case = layout.load_case(root, case_id, data.label_values)
        image = prepare_image(case, data)
        label = pp.label_map(case.label, data.foreground_labels, data.classes)
        shape = tuple(int(n) for n in label.shape)
        if pad is not None:
            image, label = pad_to_patch(image, label, pad)
        out.images.append(np.ascontiguousarray(image, dtype=np.float32))
        out.labels.append(label if expose_labels else np.zeros_like(label))
        out.case_ids.append(case_id)
        out.shapes.append(shape)  # type: ignore[arg-type]
        out.spacing.append(case.spacing)
    return out


def volume_geometry(sets: dict[str, VolumeSet], role: str = "test") -> dict[str, CaseGeometry]:
    """Grid (before padding) and spacing of each case of ``role``."""
    volumes = sets[role]
    return {c: CaseGeometry(s, sp) for c, s, sp in zip(volumes.case_ids, volumes.shapes, volumes.spacing)}
