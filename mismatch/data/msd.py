"""The Medical Segmentation Decathlon / nnU-Net raw layout: reading and writing.

A dataset root holds::

    dataset.json
    imagesTr/<case>_0000.nii.gz   one file per channel (modality), 3D
    imagesTr/<case>_0001.nii.gz
    labelsTr/<case>.nii.gz        integer labels, same grid as the images

Volumes are stored with NIfTI axes (H, W, S): the last axis is the axial (slice) axis.
:func:`load_case` returns the image as (C, S, H, W) float32 and the label as (S, H, W).
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np

from mismatch.data.errors import DataError
from mismatch.data.layouts import Layout, register_layout

DATASET_JSON = "dataset.json"
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
DEFAULT_FILE_ENDING = ".nii.gz"
_SUPPORTED_ENDINGS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.json`` says about a dataset, normalised across MSD and nnU-Net v2."""

    channel_names: tuple[str, ...]
    labels: dict[str, Any]
    num_training: int | None
    file_ending: str
    name: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Case:
    """One case as arrays: ``image`` float32 (C, S, H, W), ``label`` integer (S, H, W)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    channel_names: tuple[str, ...]


# ----------------------------------------------------------------------------- reading


def read_dataset_json(root: str | Path) -> DatasetInfo:
    """Read and check ``<root>/dataset.json``.

    Channel names come from ``channel_names`` (nnU-Net v2) or ``modality`` (MSD / nnU-Net
    v1); ``file_ending`` defaults to ``.nii.gz``. Labels are kept as ``name -> value``
    whichever way round the file writes them.
    """
    path = Path(root) / DATASET_JSON
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"dataset.json not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    channels = raw.get("channel_names", raw.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise DataError(f"{path}: needs a non-empty 'channel_names' (or 'modality') mapping")
    try:
        order = sorted(channels, key=int)
    except ValueError:
        raise DataError(f"{path}: channel keys must be integers, got {list(channels)}") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise DataError(f"{path}: channel keys must be 0..{len(order) - 1}, got {order}")
    ending = raw.get("file_ending", DEFAULT_FILE_ENDING)
    if ending not in _SUPPORTED_ENDINGS:
        raise DataError(f"{path}: file_ending {ending!r} is not supported ({_SUPPORTED_ENDINGS})")
    return DatasetInfo(
        channel_names=tuple(str(channels[k]) for k in order),
        labels=_normalise_labels(raw.get("labels", {}), path),
        num_training=raw.get("numTraining"),
        file_ending=ending,
        name=str(raw.get("name", "")),
        raw=raw,
    )


def _normalise_labels(labels: Any, path: Path) -> dict[str, Any]:
    """``{"0": "background"}`` (MSD) and ``{"background": 0}`` (nnU-Net v2) -> name: value."""
    if not isinstance(labels, dict):
        raise DataError(f"{path}: 'labels' must be a mapping")
    if labels and all(isinstance(v, str) for v in labels.values()):
        return {name: int(value) for value, name in labels.items()}
    return dict(labels)


def list_cases(root: str | Path, info: DatasetInfo | None = None) -> list[str]:
    """Sorted ids of every case that has an image channel file or a label file."""
    root = Path(root)
    info = info or read_dataset_json(root)
    ending = re.escape(info.file_ending)
    image_re = re.compile(rf"^(?P<case>.+)_\d{{4}}{ending}$")
    label_re = re.compile(rf"^(?P<case>.+){ending}$")
    cases: set[str] = set()
    for folder, pattern in ((IMAGES_DIR, image_re), (LABELS_DIR, label_re)):
        if not (root / folder).is_dir():
            raise DataError(f"folder not found: {root / folder}")
        for entry in (root / folder).iterdir():
            match = pattern.match(entry.name)
            if match and not entry.name.startswith("."):
                cases.add(match["case"])
    return sorted(cases)


def case_files(root: str | Path, case_id: str, info: DatasetInfo | None = None) -> list[Path]:
    """The files of one case: every channel file in order, then the label file."""
    root = Path(root)
    info = info or read_dataset_json(root)
    images = [
        root / IMAGES_DIR / f"{case_id}_{c:04d}{info.file_ending}"
        for c in range(len(info.channel_names))
    ]
    return [*images, root / LABELS_DIR / f"{case_id}{info.file_ending}"]


def load_case(root: str | Path, case_id: str, info: DatasetInfo | None = None) -> Case:
    """Load one case; errors name the missing, unreadable or mismatched file."""
    root = Path(root)
    info = info or read_dataset_json(root)
    *image_paths, label_path = case_files(root, case_id, info)
    channels = []
    affine = None
    for path in image_paths:
        volume, vol_affine = _read_volume(path, "image channel")
        if channels and volume.shape != channels[0].shape:
            raise DataError(
                f"{path}: shape {volume.shape} differs from {image_paths[0].name} "
                f"{channels[0].shape} (channels of one case must share a grid)"
            )
        channels.append(volume)
        affine = vol_affine if affine is None else affine
    label, _ = _read_volume(label_path, "label")
    if label.shape != channels[0].shape:
        raise DataError(
            f"{label_path}: label shape {label.shape} differs from image shape "
            f"{channels[0].shape} ({image_paths[0].name})"
        )
    image = np.stack([_to_shw(v).astype(np.float32, copy=False) for v in channels])  # (C, S, H, W)
    return Case(
        case_id=case_id,
        image=np.ascontiguousarray(image),
        label=_as_label(_to_shw(label), label_path),
        affine=np.asarray(affine, dtype=np.float64),
        channel_names=info.channel_names,
    )


def load_label(root: str | Path, case_id: str, info: DatasetInfo | None = None) -> np.ndarray:
    """Only the label (S, H, W) of a case: cheaper than :func:`load_case` when selecting slices."""
    label_path = case_files(root, case_id, info)[-1]
    label, _ = _read_volume(label_path, "label")
    return _as_label(_to_shw(label), label_path)


def _read_volume(path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A 3D array (H, W, S) and its affine; a missing or broken file raises DataError."""
    if not path.is_file():
        raise DataError(f"missing {what} file: {path}")
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as err:
        raise DataError(f"cannot read {what} file {path}: {err}") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data, img.affine


def _to_shw(volume: np.ndarray) -> np.ndarray:
    """NIfTI (H, W, S) -> (S, H, W)."""
    return np.moveaxis(volume, 2, 0)


def _as_label(label: np.ndarray, path: Path) -> np.ndarray:
    """Integer labels: uint8 when every value fits, int32 otherwise."""
    if not np.issubdtype(label.dtype, np.integer):
        rounded = np.rint(label)
        if not np.array_equal(rounded, label):
            raise DataError(f"{path}: label values must be integers")
        label = rounded
    low, high = (int(label.min()), int(label.max())) if label.size else (0, 0)
    if low < 0:
        raise DataError(f"{path}: label values must be >= 0, found {low}")
    dtype = np.uint8 if high <= 255 else np.int32
    return np.ascontiguousarray(label, dtype=dtype)


def dataset_meta_files(root: str | Path) -> list[Path]:
    """Dataset-level files whose content is part of the data fingerprint."""
    return [Path(root) / DATASET_JSON]


# ----------------------------------------------------------------------------- writing


def write_dataset_json(
    root: str | Path,
    *,
    name: str,
    channel_names: Sequence[str],
    labels: Mapping[str, int],
    num_training: int,
    description: str = "",
    file_ending: str = DEFAULT_FILE_ENDING,
) -> Path:
    """Write ``dataset.json`` readable by MSD tools, nnU-Net v1 and nnU-Net v2.

    Both ``channel_names`` (v2) and ``modality`` (MSD/v1) are written; labels use the v2
    form ``name -> value``; ``training`` lists cases the MSD way.
    """
    root = Path(root)
    channels = {str(i): str(c) for i, c in enumerate(channel_names)}
    meta = {
        "name": name,
        "description": description,
        "tensorImageSize": "3D",
        "channel_names": channels,
        "modality": channels,
        "labels": dict(labels),
        "numTraining": num_training,
        "file_ending": file_ending,
    }
    path = root / DATASET_JSON
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def write_case(
    root: str | Path,
    case_id: str,
    image: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    image_dtype: type = np.float32,
    file_ending: str = DEFAULT_FILE_ENDING,
) -> list[Path]:
    """Write one case: ``image`` (C, S, H, W) as one file per channel, ``label`` (S, H, W)."""
    root = Path(root)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (root / LABELS_DIR).mkdir(parents=True, exist_ok=True)
    paths = []
    for c, channel in enumerate(image):
        path = root / IMAGES_DIR / f"{case_id}_{c:04d}{file_ending}"
        _save(np.moveaxis(channel, 0, 2).astype(image_dtype), affine, path)  # (H, W, S)
        paths.append(path)
    path = root / LABELS_DIR / f"{case_id}{file_ending}"
    _save(np.moveaxis(label, 0, 2).astype(np.uint8), affine, path)
    return [*paths, path]


def _save(volume: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(np.ascontiguousarray(volume), affine)
    img.header.set_xyzt_units("mm")
    img.set_data_dtype(volume.dtype)
    nib.save(img, path)


LAYOUT = register_layout(
    Layout(
        name="msd",
        list_cases=list_cases,
        load_case=load_case,
        load_label=load_label,
        files=case_files,
        meta_files=dataset_meta_files,
    )
)
