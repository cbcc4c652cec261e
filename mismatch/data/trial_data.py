"""Everything a trial reads: prepared slices of each role, the splits and a fingerprint.

:func:`load_trial_data` is the one entry point of the training loop. Synthetic and real
datasets share one path: a synthetic spec is first written (once, cached) in the MSD
layout and then read like any other dataset.

Recipe per case (see docs/data.md): clip -> normalise (whole case) -> foreground mask
-> qualifying slices -> selection per role -> adjacent slices as channels -> crop or pad.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mismatch.config import DataSpec, ProtocolSpec
from mismatch.data import preprocess as pp
from mismatch.data.errors import DataError, FingerprintMismatchError
from mismatch.data.layouts import Layout, get_layout
from mismatch.data.msd import Case
from mismatch.data.selection import SliceRef, all_qualifying, select_labelled, select_unlabelled
from mismatch.data.splits import ROLES, Splits, check_splits, make_splits, n_folds
from mismatch.data.synth import synthetic_dataset

# DataSpec fields that change the prepared slices (root, synthetic and fingerprint do not:
# the data themselves enter the fingerprint through the files' contents).
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

# Sub-streams of default_rng([split_seed, fold, stream, ...]); stream 0 is the split itself.
_UNLABELLED_STREAM = 1
_CORNER_STREAM = 2


@dataclass
class SliceSet:
    """Prepared 2D samples of one role.

    ``images`` float32 (N, C, H, W) with H, W divisible by 8; ``labels`` uint8 (N, H, W)
    binary foreground (all zeros for the unlabelled role: its labels are never exposed);
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
    def empty(cls, channels: int, height: int, width: int) -> "SliceSet":
        """A set with no samples and the given sample shape."""
        return cls(
            images=np.zeros((0, channels, height, width), dtype=np.float32),
            labels=np.zeros((0, height, width), dtype=np.uint8),
            case_ids=[],
            slice_index=np.zeros(0, dtype=np.int64),
            patch=[],
        )


@dataclass
class TrialData:
    """The slices of every role for one trial, and where they came from.

    ``fingerprint`` identifies data + recipe + protocol (differs between folds);
    ``data_fingerprint`` identifies data + recipe only and is what ``DataSpec.fingerprint``
    pins, so one pinned value holds for every fold of a study.
    """

    labelled: SliceSet
    unlabelled: SliceSet
    validation: SliceSet
    test: SliceSet
    splits: Splits
    fingerprint: str
    in_channels: int
    data_fingerprint: str = ""
    root: Path | None = None


def load_trial_data(data: DataSpec, protocol: ProtocolSpec, cache_dir: Path | None = None) -> TrialData:
    """Prepare the slices of fold ``protocol.fold`` of the dataset named by ``data``.

    ``cache_dir`` holds generated phantoms (default ``$MISMATCH_CACHE`` or
    ``~/.cache/mismatch``). Raises :class:`FingerprintMismatchError` when ``data.fingerprint``
    is set and differs from the data fingerprint computed here. Labels are read first to
    choose slices; then one case at a time is loaded, prepared and reduced to its samples,
    so memory holds one volume plus the samples.
    """
    root = dataset_root(data, cache_dir)
    layout = get_layout(data.layout)
    cases = layout.list_cases(root)
    if not cases:
        raise DataError(f"no cases found in {root}")
    splits = make_splits(cases, protocol)
    check_splits(splits, cases)
    data_fp = data_fingerprint(root, layout, cases, data)
    if data.fingerprint is not None and data.fingerprint != data_fp:
        raise FingerprintMismatchError(
            f"data in {root} with this recipe have fingerprint {data_fp}, "
            f"but the spec pins {data.fingerprint}"
        )
    qualifying, pad_shape = _qualifying(root, layout, [c for r in ROLES for c in splits[r]], data)
    refs = _select(qualifying, splits, protocol)
    built = {}
    for i, role in enumerate(ROLES):
        rng = np.random.default_rng([protocol.split_seed, protocol.fold, _CORNER_STREAM, i])
        built[role] = _build_set(root, layout, refs[role], data, pad_shape, rng, role != "unlabelled")
    sample_shape = built["labelled"].images.shape[1:]  # type: ignore[union-attr]  # never empty
    sets = {role: s if s is not None else SliceSet.empty(*sample_shape) for role, s in built.items()}
    return TrialData(
        **sets,
        splits=splits,
        fingerprint=trial_fingerprint(data_fp, protocol),
        in_channels=sets["test"].images.shape[1],
        data_fingerprint=data_fp,
        root=root,
    )


def dataset_root(data: DataSpec, cache_dir: Path | None = None) -> Path:
    """The folder the data are read from: ``data.root``, or the cached phantom dataset."""
    if data.synthetic is not None:
        return synthetic_dataset(data.synthetic, cache_dir)
    root = Path(data.root).expanduser()  # type: ignore[arg-type]
    if not root.is_dir():
        raise DataError(f"dataset root not found: {root}")
    return root


def _qualifying(
    root: Path, layout: Layout, cases: list[str], data: DataSpec
) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """Qualifying slice indices of each case, and the largest (H, W) among them."""
    qualifying, height, width = {}, 0, 0
    for case in cases:
        label = layout.load_label(root, case)  # (S, H, W)
        mask = pp.foreground(label, data.foreground_labels)
        qualifying[case] = pp.qualifying_slices(mask, data.min_foreground)
        height, width = max(height, label.shape[1]), max(width, label.shape[2])
    return qualifying, (height, width)


def _select(qualifying: dict[str, np.ndarray], splits: Splits, protocol: ProtocolSpec) -> dict[str, list[SliceRef]]:
    rng = np.random.default_rng([protocol.split_seed, protocol.fold, _UNLABELLED_STREAM])
    return {
        "labelled": select_labelled(qualifying, splits["labelled"], protocol.labelled_slices),
        "unlabelled": select_unlabelled(qualifying, splits["unlabelled"], protocol.unlabelled_slices, rng),
        "validation": all_qualifying(qualifying, splits["validation"]),
        "test": all_qualifying(qualifying, splits["test"]),
    }


def _prepare_image(case: Case, data: DataSpec) -> np.ndarray:
    """Clip (if asked), then normalise over the whole case: (C, S, H, W) float32."""
    image = case.image
    if data.clip is not None:
        image = pp.clip_intensity(image, *data.clip)
    return pp.normalise(image, data.normalise)


def _build_set(
    root: Path,
    layout: Layout,
    refs: list[SliceRef],
    data: DataSpec,
    pad_shape: tuple[int, int],
    rng: np.random.Generator,
    expose_labels: bool,
) -> SliceSet | None:
    """Load each case named in ``refs`` once and turn its chosen slices into samples.

    None when ``refs`` is empty (the caller knows the sample shape from another role).
    """
    by_case: dict[str, list[int]] = {}
    for case, s in refs:
        by_case.setdefault(case, []).append(s)
    parts = []
    for case_id, index in by_case.items():
        case = layout.load_case(root, case_id)
        image = _prepare_image(case, data)
        mask = pp.foreground(case.label, data.foreground_labels)
        parts.append(_case_samples(case_id, image, mask, np.array(index, dtype=np.int64), data, pad_shape, rng))
    if not parts:
        return None
    labels = np.concatenate([p.labels for p in parts])
    return SliceSet(
        images=np.concatenate([p.images for p in parts]),
        labels=labels if expose_labels else np.zeros_like(labels),
        case_ids=[c for p in parts for c in p.case_ids],
        slice_index=np.concatenate([p.slice_index for p in parts]),
        patch=[name for p in parts for name in p.patch],
    )


def _case_samples(
    case: str,
    image: np.ndarray,
    mask: np.ndarray,
    index: np.ndarray,
    data: DataSpec,
    pad_shape: tuple[int, int],
    rng: np.random.Generator,
) -> SliceSet:
    """The samples of slices ``index`` of one prepared case: image (C, S, H, W), mask (S, H, W)."""
    images = pp.context_stack(image, index, data.context_slices)  # (N, C * k, H, W)
    labels = mask[index]  # (N, H, W)
    h, w = labels.shape[-2:]
    if data.crop == "none":
        pad_value = np.repeat(pp.channel_minimum(image), data.context_slices)  # per output channel
        images = pp.pad_to_multiple(images, 8, pad_value, shape=pad_shape)
        labels = pp.pad_to_multiple(labels, 8, 0, shape=pad_shape)
        patches = ["full"] * len(index)
    elif data.crop == "centre":
        top, left = pp.centre_offset(h, w, data.crop_size)
        images = pp.crop(images, top, left, data.crop_size)
        labels = pp.crop(labels, top, left, data.crop_size)
        patches = ["centre"] * len(index)
    else:
        patches = _corner_names(data.crop, len(index), rng)
        offsets = pp.corner_offsets(h, w, data.crop_size)
        source = np.repeat(np.arange(len(index)), len(patches) // len(index))  # sample -> slice
        images = np.stack([pp.crop(images[i], *offsets[p], data.crop_size) for i, p in zip(source, patches)])
        labels = np.stack([pp.crop(labels[i], *offsets[p], data.crop_size) for i, p in zip(source, patches)])
        index = index[source]
    return SliceSet(
        images=np.ascontiguousarray(images, dtype=np.float32),
        labels=np.ascontiguousarray(labels, dtype=np.uint8),
        case_ids=[case] * len(index),
        slice_index=index,
        patch=patches,
    )


def _corner_names(crop: str, n: int, rng: np.random.Generator) -> list[str]:
    """'corners': the four corners for each of ``n`` slices (slice-major); 'random-corner':
    one corner per slice drawn from ``rng``."""
    if crop == "corners":
        return [c for _ in range(n) for c in pp.CORNERS]
    if crop == "random-corner":
        return [pp.CORNERS[k] for k in rng.integers(0, len(pp.CORNERS), size=n)]
    raise DataError(f"unknown crop {crop!r}")


def recipe(data: DataSpec) -> dict:
    """The DataSpec fields that change preparation, as plain data."""
    dumped = data.model_dump(mode="json")
    return {k: dumped[k] for k in RECIPE_FIELDS}


def data_fingerprint(root: Path, layout: Layout, cases: Sequence[str], data: DataSpec) -> str:
    """sha256 of the preparation recipe, the case list and the bytes of every file of every case.

    Every case counts (not only this fold's), so the value is the same for every fold.
    """
    digest = hashlib.sha256()
    header = {"recipe": recipe(data), "cases": list(cases)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    files = list(layout.meta_files(root)) + [f for c in cases for f in layout.files(root, c)]
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(_file_sha256(path).encode())
    return digest.hexdigest()


def trial_fingerprint(data_fp: str, protocol: ProtocolSpec) -> str:
    """sha256 of the data fingerprint and the split protocol."""
    payload = json.dumps({"data": data_fp, "protocol": protocol.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from None
    return digest.hexdigest()


def n_folds_of(data: DataSpec, protocol: ProtocolSpec, cache_dir: Path | None = None) -> int:
    """How many folds the dataset named by ``data`` gives under ``protocol`` (for ``fold: all``)."""
    if data.synthetic is not None:
        return n_folds(data.synthetic.cases, protocol.labelled_cases)
    root = dataset_root(data, cache_dir)
    return n_folds(len(get_layout(data.layout).list_cases(root)), protocol.labelled_cases)
