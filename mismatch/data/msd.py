"""The Medical Segmentation Decathlon / nnU-Net raw layout: reading and writing.

A dataset root holds::

    dataset.json
    imagesTr/<case>_0000.nii.gz   one file per channel (modality), 3D  (nnU-Net)
    imagesTr/<case>_0001.nii.gz
    labelsTr/<case>.nii.gz        integer labels, same grid as the images

or, as the MSD downloads ship them, ``imagesTr/<case>.nii.gz`` holding every channel (4D,
channels last). Volumes are stored with NIfTI axes (H, W, S): the last spatial axis is the
axial (slice) axis. :func:`load_case` returns the image as (C, S, H, W) float32 and the
label as (S, H, W).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mismatch.data.errors import FileProblemError
from mismatch.data.layouts import Layout, register_layout
from mismatch.data.volumes import Case, CaseSources, Problem, write_nifti

DATASET_JSON = "dataset.json"
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
DEFAULT_FILE_ENDING = ".nii.gz"
_SUPPORTED_ENDINGS = (".nii.gz", ".nii")

__all__ = ["Case", "DatasetInfo", "case_files", "list_cases", "load_case", "load_label", "read_dataset_json"]


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.json`` says about a dataset, normalised across MSD and nnU-Net v2."""

    channel_names: tuple[str, ...]
    labels: dict[str, Any]
    num_training: int | None
    file_ending: str
    name: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


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
        raise FileProblemError(path, "dataset.json not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FileProblemError(path, f"cannot read: {err}") from None
    if not isinstance(raw, dict):
        raise FileProblemError(path, "expected a JSON object at the top level")
    channels = raw.get("channel_names", raw.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise FileProblemError(path, "needs a non-empty 'channel_names' (or 'modality') mapping")
    try:
        order = sorted(channels, key=int)
    except ValueError:
        raise FileProblemError(path, f"channel keys must be integers, got {list(channels)}") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise FileProblemError(path, f"channel keys must be 0..{len(order) - 1}, got {order}")
    ending = raw.get("file_ending", DEFAULT_FILE_ENDING)
    if ending not in _SUPPORTED_ENDINGS:
        raise FileProblemError(path, f"file_ending {ending!r} is not supported ({_SUPPORTED_ENDINGS})")
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
        raise FileProblemError(path, "'labels' must be a mapping")
    if labels and all(isinstance(v, str) for v in labels.values()):
        return {name: int(value) for value, name in labels.items()}
    return dict(labels)


def list_cases(root: str | Path, info: DatasetInfo | None = None) -> list[str]:
    """Sorted ids of every case that has an image file or a label file.

    ``imagesTr/<case>_<4 digits><ending>`` is a channel file of ``<case>``; any other
    ``imagesTr/<case><ending>`` is an MSD file holding every channel of ``<case>``.
    """
    root = Path(root)
    info = info or read_dataset_json(root)
    ending = re.escape(info.file_ending)
    channel_re = re.compile(rf"^(?P<case>.+)_\d{{4}}{ending}$")
    whole_re = re.compile(rf"^(?P<case>.+){ending}$")
    cases: set[str] = set()
    for folder in (IMAGES_DIR, LABELS_DIR):
        if not (root / folder).is_dir():
            raise FileProblemError(root / folder, "folder not found")
        for entry in (root / folder).iterdir():
            if entry.name.startswith("."):
                continue
            match = (channel_re.match(entry.name) if folder == IMAGES_DIR else None) or whole_re.match(entry.name)
            if match:
                cases.add(match["case"])
    return sorted(cases)


def case_sources(root: str | Path, case_id: str, info: DatasetInfo | None = None) -> CaseSources:
    """The image files (one per channel, or one MSD 4D file) and the label file of a case."""
    root = Path(root)
    info = info or read_dataset_json(root)
    whole = root / IMAGES_DIR / f"{case_id}{info.file_ending}"
    first = root / IMAGES_DIR / f"{case_id}_0000{info.file_ending}"
    if whole.is_file() and not first.is_file():
        images: tuple[Path, ...] = (whole,)
    else:
        images = tuple(
            root / IMAGES_DIR / f"{case_id}_{c:04d}{info.file_ending}" for c in range(len(info.channel_names))
        )
    return CaseSources(images=images, label=root / LABELS_DIR / f"{case_id}{info.file_ending}")


def case_files(root: str | Path, case_id: str, info: DatasetInfo | None = None) -> list[Path]:
    """The files of one case: every image file in channel order, then the label file."""
    sources = case_sources(root, case_id, info)
    return [*sources.images, sources.label]


def load_case(root: str | Path, case_id: str, info: DatasetInfo | None = None) -> Case:
    """Load one case; errors name the missing, unreadable or mismatched file."""
    return LAYOUT.load_case(Path(root), case_id)


def load_label(root: str | Path, case_id: str, info: DatasetInfo | None = None) -> np.ndarray:
    """Only the label (S, H, W) of a case: cheaper than :func:`load_case` when selecting slices."""
    return LAYOUT.load_label(Path(root), case_id)


def label_values(root: str | Path) -> tuple[int, ...] | None:
    """Every label value ``dataset.json`` declares (region lists flattened); None if it lists none."""
    path = Path(root) / DATASET_JSON
    values: set[int] = set()
    for value in read_dataset_json(root).labels.values():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            try:
                values.add(int(v))
            except (TypeError, ValueError):
                raise FileProblemError(path, f"label value {v!r} is not an integer") from None
    return tuple(sorted(values)) or None


def label_names(root: str | Path) -> dict[int, str]:
    """The name ``dataset.json`` gives each single label value (regions, lists of values, are left out)."""
    names: dict[int, str] = {}
    for name, value in read_dataset_json(root).labels.items():
        if isinstance(value, (int, str)) and str(value).lstrip("-").isdigit():
            names[int(value)] = str(name)
    return names


def stray_files(root: str | Path, cases: Sequence[str]) -> list[Problem]:
    """Channel files beyond the channels ``dataset.json`` declares (e.g. a stray ``_0004``), and a
    ``numTraining`` in ``dataset.json`` that differs from the number of training ``cases`` found."""
    root = Path(root)
    info = read_dataset_json(root)
    problems = num_training_problems(root, info, cases)
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(info.file_ending)}$")
    for entry in sorted((root / IMAGES_DIR).iterdir()):
        match = pattern.match(entry.name)
        if match and int(match["channel"]) >= len(info.channel_names):
            problems.append((entry, f"channel {int(match['channel'])} is not declared in dataset.json "
                                    f"({len(info.channel_names)} channels)"))
    return problems


def num_training_problems(root: Path, info: DatasetInfo, cases: Sequence[str]) -> list[Problem]:
    """``numTraining`` (when ``dataset.json`` gives it) must be an integer equal to the number of
    training cases found (as nnU-Net's dataset integrity check requires)."""
    path, declared = root / DATASET_JSON, info.num_training
    if declared is None:
        return []
    if isinstance(declared, bool) or not isinstance(declared, int):
        return [(path, f"numTraining must be an integer, got {declared!r}")]
    if declared != len(cases):
        return [(path, f"numTraining is {declared} but {len(cases)} training cases were found "
                       f"in {IMAGES_DIR}/ and {LABELS_DIR}/")]
    return []


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
        paths.append(write_nifti(path, channel, affine, image_dtype))  # stored (H, W, S)
    path = root / LABELS_DIR / f"{case_id}{file_ending}"
    return [*paths, write_nifti(path, label, affine, np.uint8)]


LAYOUT = register_layout(
    Layout(
        name="msd",
        list_cases=list_cases,
        sources=case_sources,
        channel_names=lambda root: read_dataset_json(root).channel_names,
        label_values=label_values,
        label_names=label_names,
        meta_files=dataset_meta_files,
        stray_files=stray_files,
        description="Medical Segmentation Decathlon / nnU-Net raw: dataset.json, imagesTr/, labelsTr/ (NIfTI)",
    )
)
