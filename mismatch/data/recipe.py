"""The preparation recipe applied to one case, the samples it gives, and data fingerprints.

Shared by the two ways a trial gets its slices: preparing raw files on the fly
(:mod:`mismatch.data.trial_data`) and reading a prepared cache (:mod:`mismatch.data.cache`),
so both give identical samples.

Recipe per case (see docs/data.md): clip -> normalise (whole case) -> foreground mask
-> qualifying slices -> (selection per role, elsewhere) -> adjacent slices as channels
-> crop or pad.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mismatch.config import DataSpec, ProtocolSpec
from mismatch.data import preprocess as pp
from mismatch.data.errors import DataError, FileProblemError
from mismatch.data.layouts import Layout
from mismatch.data.volumes import Case

# DataSpec fields that change the prepared slices (root, synthetic, prepared, preset,
# label_values and fingerprint do not: the data enter the fingerprint through the files'
# contents, and a preset only fills these fields).
RECIPE_FIELDS = (
    "layout",
    "foreground_labels",
    "clip",
    "normalise",
    "min_foreground",
    "crop",
    "crop_size",
    "context_slices",
)


@dataclass
class SliceSet:
    """Prepared 2D samples of one role.

    ``images`` float32 (N, C, H, W) with H, W divisible by 8; ``labels`` uint8 (N, H, W)
    class indices (binary: 0/1 foreground; ``DataSpec.classes``: 0..C-1) (all zeros for the unlabelled role: its labels are never exposed);
    ``case_ids``, ``slice_index`` (int64) and ``patch`` name where each sample came from
    (``patch`` is 'full', 'centre' or a corner name).
    """

    images: np.ndarray
    labels: np.ndarray
    case_ids: list[str]
    slice_index: np.ndarray
    patch: list[str]

    def __post_init__(self) -> None:
        n = len(self.images)
        lengths = {len(self.labels), len(self.case_ids), len(self.slice_index), len(self.patch)}
        if lengths != {n} or self.images.ndim != 4 or self.labels.shape[1:] != self.images.shape[2:]:
            raise ValueError("SliceSet fields disagree in length or spatial shape")

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def empty(cls, channels: int, height: int, width: int) -> SliceSet:
        """A set with no samples and the given sample shape."""
        return cls(
            images=np.zeros((0, channels, height, width), dtype=np.float32),
            labels=np.zeros((0, height, width), dtype=np.uint8),
            case_ids=[],
            slice_index=np.zeros(0, dtype=np.int64),
            patch=[],
        )

    @classmethod
    def concatenate(cls, parts: Sequence[SliceSet]) -> SliceSet:
        """The samples of ``parts`` one after another (at least one part)."""
        return cls(
            images=np.concatenate([p.images for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            case_ids=[c for p in parts for c in p.case_ids],
            slice_index=np.concatenate([p.slice_index for p in parts]),
            patch=[name for p in parts for name in p.patch],
        )


def recipe(data: DataSpec) -> dict:
    """The DataSpec fields that change preparation, as plain (JSON) data.

    ``classes`` enters only when given, so binary recipes (and their fingerprints) are those
    from before multi-class data existed.
    """
    dumped = data.model_dump(mode="json")
    fields = (*RECIPE_FIELDS, "classes") if data.classes is not None else RECIPE_FIELDS
    return {k: dumped[k] for k in fields}


def prepare_image(case: Case, data: DataSpec) -> np.ndarray:
    """Clip (if asked), then normalise over the whole case: (C, S, H, W) float32."""
    image = case.image
    if data.clip is not None:
        image = pp.clip_intensity(image, *data.clip)
    return pp.normalise(image, data.normalise)


def pad_value(image: np.ndarray, context_slices: int) -> np.ndarray:
    """Per output channel pad value of a prepared image (C, S, H, W): its channel minimum."""
    return np.repeat(pp.channel_minimum(image), context_slices)


def case_samples(
    case: str,
    image: np.ndarray,
    mask: np.ndarray,
    index: np.ndarray,
    data: DataSpec,
    pad_shape: tuple[int, int] | None,
    rng: np.random.Generator | None,
) -> SliceSet:
    """The samples of slices ``index`` of one prepared case: image (C, S, H, W), mask (S, H, W).

    ``pad_shape`` None leaves ``crop: none`` slices unpadded; ``rng`` None gives all four
    corners for ``random-corner`` (what a prepared cache stores).
    """
    images = pp.context_stack(image, index, data.context_slices)  # (N, C * k, H, W)
    labels = mask[index]  # (N, H, W)
    h, w = labels.shape[-2:]
    if data.crop == "none":
        if pad_shape is not None:
            images = pp.pad_to_multiple(images, 8, pad_value(image, data.context_slices), shape=pad_shape)
            labels = pp.pad_to_multiple(labels, 8, 0, shape=pad_shape)
        patches = ["full"] * len(index)
    elif data.crop == "centre":
        top, left = pp.centre_offset(h, w, data.crop_size)
        images = pp.crop(images, top, left, data.crop_size)
        labels = pp.crop(labels, top, left, data.crop_size)
        patches = ["centre"] * len(index)
    else:
        patches = corner_names("corners" if rng is None else data.crop, len(index), rng)
        offsets = pp.corner_offsets(h, w, data.crop_size)
        source = np.repeat(np.arange(len(index)), len(patches) // max(len(index), 1))  # sample -> slice
        images = _stack([pp.crop(images[i], *offsets[p], data.crop_size) for i, p in zip(source, patches)], images)
        labels = _stack([pp.crop(labels[i], *offsets[p], data.crop_size) for i, p in zip(source, patches)], labels)
        index = index[source]
    return SliceSet(
        images=np.ascontiguousarray(images, dtype=np.float32),
        labels=np.ascontiguousarray(labels, dtype=np.uint8),
        case_ids=[case] * len(index),
        slice_index=np.asarray(index, dtype=np.int64),
        patch=patches,
    )


def _stack(arrays: list[np.ndarray], like: np.ndarray) -> np.ndarray:
    return np.stack(arrays) if arrays else like[:0]


def corner_names(crop: str, n: int, rng: np.random.Generator | None) -> list[str]:
    """'corners': the four corners for each of ``n`` slices (slice-major); 'random-corner':
    one corner per slice drawn from ``rng``."""
    if crop == "corners":
        return [c for _ in range(n) for c in pp.CORNERS]
    if crop == "random-corner" and rng is not None:
        return [pp.CORNERS[k] for k in rng.integers(0, len(pp.CORNERS), size=n)]
    raise DataError(f"unknown crop {crop!r}")


# ----------------------------------------------------------------------------- fingerprints


def data_fingerprint(
    root: Path, layout: Layout, cases: Sequence[str], data: DataSpec, file_hashes: Mapping[str, str] | None = None
) -> str:
    """sha256 of the preparation recipe, the case list and the bytes of every file of every case.

    Every case counts (not only this fold's), so the value is the same for every fold.
    ``file_hashes`` maps a path relative to ``root`` to its known sha256 (else it is read).
    """
    digest = hashlib.sha256()
    header = {"recipe": recipe(data), "cases": list(cases)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for path in dataset_files(root, layout, cases):
        rel = str(path.relative_to(root))
        digest.update(rel.encode() + b"\0")
        known = file_hashes.get(rel) if file_hashes is not None else None
        digest.update((known or file_sha256(path)).encode())
    return digest.hexdigest()


def dataset_files(root: Path, layout: Layout, cases: Sequence[str]) -> list[Path]:
    """Dataset-level files, then every file of every case, in a fixed order."""
    return list(layout.meta_files(root)) + [f for c in cases for f in layout.files(root, c)]


def trial_fingerprint(data_fp: str, protocol: ProtocolSpec) -> str:
    """sha256 of the data fingerprint and the split protocol (label draw 0 left out, so
    fingerprints from before label draws existed hold)."""
    split = protocol.model_dump(mode="json")
    if split.get("label_draw") == 0:
        split.pop("label_draw")
    payload = json.dumps({"data": data_fp, "protocol": split}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes; a missing or unreadable file raises DataError naming it."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise FileProblemError(path, "missing file") from None
    except OSError as err:
        raise FileProblemError(path, f"cannot read: {err}") from None
    return digest.hexdigest()
