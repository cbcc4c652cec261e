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
from mismatch.data.splits import Splits, check_splits, make_splits
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


@dataclass
class _Prepared:
    """One case after normalisation: image (C, S, H, W), foreground (S, H, W), qualifying."""

    image: np.ndarray
    mask: np.ndarray
    qualifying: np.ndarray
    pad_value: np.ndarray


def load_trial_data(data: DataSpec, protocol: ProtocolSpec, cache_dir: Path | None = None) -> TrialData:
    """Prepare the slices of fold ``protocol.fold`` of the dataset named by ``data``.

    ``cache_dir`` holds generated phantoms (default ``$MISMATCH_CACHE`` or
    ``~/.cache/mismatch``). Raises :class:`FingerprintMismatchError` when ``data.fingerprint``
    is set and differs from the data fingerprint computed here.
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
    used = [c for role in splits.values() for c in role]
    prepared = {c: _prepare_case(layout.load_case(root, c), data) for c in used}
    refs = _select(prepared, splits, protocol)
    pad_shape = _common_shape([prepared[c].image for c in used])
    sets = {
        role: _build_set(prepared, refs[role], data, pad_shape, _corner_rng(protocol, i), role != "unlabelled")
        for i, (role, _) in enumerate(refs.items())
    }
    channels = next(iter(prepared.values())).image.shape[0] * data.context_slices
    return TrialData(
        **sets,
        splits=splits,
        fingerprint=trial_fingerprint(data_fp, protocol),
        in_channels=channels,
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


def _prepare_case(case: Case, data: DataSpec) -> _Prepared:
    image = case.image
    if data.clip is not None:
        image = pp.clip_intensity(image, *data.clip)
    image = pp.normalise(image, data.normalise)
    mask = pp.foreground(case.label, data.foreground_labels)
    qualifying = pp.qualifying_slices(mask, data.min_foreground)
    return _Prepared(image, mask, qualifying, pp.channel_minimum(image))


def _select(prepared: dict[str, _Prepared], splits: Splits, protocol: ProtocolSpec) -> dict[str, list[SliceRef]]:
    qualifying = {c: p.qualifying for c, p in prepared.items()}
    rng = np.random.default_rng([protocol.split_seed, protocol.fold, _UNLABELLED_STREAM])
    return {
        "labelled": select_labelled(qualifying, splits["labelled"], protocol.labelled_slices),
        "unlabelled": select_unlabelled(qualifying, splits["unlabelled"], protocol.unlabelled_slices, rng),
        "validation": all_qualifying(qualifying, splits["validation"]),
        "test": all_qualifying(qualifying, splits["test"]),
    }


def _corner_rng(protocol: ProtocolSpec, role_index: int) -> np.random.Generator:
    return np.random.default_rng([protocol.split_seed, protocol.fold, _CORNER_STREAM, role_index])


def _common_shape(images: Sequence[np.ndarray]) -> tuple[int, int]:
    """Largest (H, W) among the cases: 'none' pads every slice to it (then to a multiple of 8)."""
    return max(i.shape[-2] for i in images), max(i.shape[-1] for i in images)


def _build_set(
    prepared: dict[str, _Prepared],
    refs: list[SliceRef],
    data: DataSpec,
    pad_shape: tuple[int, int],
    rng: np.random.Generator,
    expose_labels: bool,
) -> SliceSet:
    by_case: dict[str, list[int]] = {}
    for case, s in refs:
        by_case.setdefault(case, []).append(s)
    parts = [
        _case_samples(case, prepared[case], np.array(index, dtype=np.int64), data, pad_shape, rng)
        for case, index in by_case.items()
    ]
    if not parts:
        channels = next(iter(prepared.values())).image.shape[0] * data.context_slices
        return SliceSet.empty(channels, *_sample_shape(data, pad_shape))
    labels = np.concatenate([p.labels for p in parts])
    return SliceSet(
        images=np.concatenate([p.images for p in parts]),
        labels=labels if expose_labels else np.zeros_like(labels),
        case_ids=[c for p in parts for c in p.case_ids],
        slice_index=np.concatenate([p.slice_index for p in parts]),
        patch=[name for p in parts for name in p.patch],
    )


def _sample_shape(data: DataSpec, pad_shape: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of every sample: the crop size, or the common shape padded to a multiple of 8."""
    if data.crop != "none":
        return data.crop_size, data.crop_size
    return pp.round_up(pad_shape[0], 8), pp.round_up(pad_shape[1], 8)


def _case_samples(
    case: str, prep: _Prepared, index: np.ndarray, data: DataSpec, pad_shape: tuple[int, int],
    rng: np.random.Generator,
) -> SliceSet:
    """The samples of one case's slices ``index`` (crop/pad applied)."""
    images = pp.context_stack(prep.image, index, data.context_slices)  # (N, C * k, H, W)
    labels = prep.mask[index]  # (N, H, W)
    h, w = labels.shape[-2:]
    if data.crop == "none":
        pad_value = np.repeat(prep.pad_value, data.context_slices)  # per output channel
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
