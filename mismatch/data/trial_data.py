"""Everything a trial reads: prepared slices of each role, the splits and a fingerprint.

:func:`load_trial_data` is the one entry point of the training loop. The slices come from
one of three sources, chosen by the :class:`DataSpec`:

- ``root``: a raw dataset in a registered layout, prepared on the fly;
- ``synthetic``: a phantom, generated once (cached) in the MSD layout, then read like ``root``;
- ``prepared``: a cache written by ``mismatch data prepare`` (:mod:`mismatch.data.cache`),
  which holds every case already prepared; splits and selection are done here as for raw
  data, so both give the same samples.

Recipe per case (see docs/data.md): clip -> normalise (whole case) -> foreground mask
-> qualifying slices -> selection per role -> adjacent slices as channels -> crop or pad.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from mismatch.config import DataSpec, ProtocolSpec
from mismatch.data import preprocess as pp
from mismatch.data.cache import PreparedDataset, open_prepared
from mismatch.data.errors import DataError, FingerprintMismatchError
from mismatch.data.h5layouts import fixed_lists
from mismatch.data.layouts import class_names, get_layout
from mismatch.data.recipe import (
    RECIPE_FIELDS,
    SliceSet,
    case_samples,
    data_fingerprint,
    prepare_image,
    recipe,
    trial_fingerprint,
)
from mismatch.data.selection import SliceRef, all_qualifying, select_labelled, select_unlabelled
from mismatch.data.splits import ROLES, CaseLists, Splits, check_splits, n_folds, trial_splits
from mismatch.data.synth import synthetic_dataset
from mismatch.data.volumes import CaseGeometry
from mismatch.data.volumes3d import VolumeSet, VolumeWindow, load_volume_sets, volume_geometry

__all__ = [
    "RECIPE_FIELDS", "SliceSet", "TrialData", "VolumeSet", "data_fingerprint", "dataset_root", "load_trial_data", "n_folds_of",
    "recipe", "trial_fingerprint",
]

# Sub-streams of default_rng([split_seed, fold, stream, ...]); stream 0 is the split itself.
_UNLABELLED_STREAM = 1
_CORNER_STREAM = 2
_LABEL_DRAW_STREAM = 3


@dataclass
class TrialData:
    """The slices of every role for one trial, and where they came from.

    ``fingerprint`` identifies data + recipe + protocol (differs between folds);
    ``data_fingerprint`` identifies data + recipe only and is what ``DataSpec.fingerprint``
    pins, so one pinned value holds for every fold of a study. ``cases`` lists every case
    of the dataset (all folds); ``root`` is the raw dataset or the prepared cache folder.
    ``geometry`` holds each test case's grid and voxel spacing (mm, from its header): what
    per-case surface distances are measured in. ``num_classes`` is C, the classes the labels
    hold (0..C-1; 2 for a binary task); ``class_names`` names the foreground classes 1..C-1
    (``("foreground",)`` when binary).

    A 3D trial (``spatial_dims`` 3) holds a :class:`VolumeSet` of whole volumes per role
    instead of slices, and ``window`` its patch and sliding-window settings.
    """

    labelled: SliceSet | VolumeSet
    unlabelled: SliceSet | VolumeSet
    validation: SliceSet | VolumeSet
    test: SliceSet | VolumeSet
    splits: Splits
    fingerprint: str
    in_channels: int
    data_fingerprint: str = ""
    root: Path | None = None
    cases: list[str] = field(default_factory=list)
    geometry: dict[str, CaseGeometry] = field(default_factory=dict)
    lists: CaseLists | None = None  # the benchmark's fixed lists under ``protocol.split: lists``
    num_classes: int = 2
    class_names: tuple[str, ...] = ("foreground",)
    spatial_dims: int = 2
    window: VolumeWindow | None = None


class SliceSource(Protocol):
    """Where a trial's samples come from: a raw dataset or a prepared cache."""

    root: Path
    cases: list[str]
    class_names: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        """sha256 of the data and the preparation recipe (:func:`data_fingerprint`)."""

    def qualifying(self, cases: list[str]) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
        """Qualifying slice indices of each case, and the largest (H, W) among the cases."""

    def build(
        self, chosen: dict[str, np.ndarray], pad_shape: tuple[int, int], rng: np.random.Generator,
        expose_labels: bool,
    ) -> SliceSet:
        """The samples of the chosen slices (qualifying, ascending) of each case, in case order."""

    def geometry(self, cases: list[str]) -> dict[str, CaseGeometry]:
        """Grid shape (S, H, W) and voxel spacing in mm of each of ``cases``."""


def load_trial_data(data: DataSpec, protocol: ProtocolSpec, cache_dir: Path | None = None) -> TrialData:
    """Prepare the slices of fold ``protocol.fold`` of the dataset named by ``data``.

    ``cache_dir`` holds generated phantoms (default ``$MISMATCH_CACHE`` or
    ``~/.cache/mismatch``). Raises :class:`FingerprintMismatchError` when ``data.fingerprint``
    is set and differs from the data's fingerprint. From raw data, labels are read first
    to choose slices; then one case at a time is loaded, prepared and reduced to its
    samples, so memory holds one volume plus the samples. From a prepared cache, the
    chosen rows are read from each case's arrays. With ``data.spatial_dims`` 3 the roles hold
    whole prepared volumes instead (:mod:`mismatch.data.volumes3d`).
    """
    source = open_source(data, cache_dir)
    lists = split_lists(data, source.root) if protocol.split == "lists" else None
    splits = trial_splits(source.cases, protocol, lists)
    check_splits(splits, source.cases)
    if data.spatial_dims == 3:
        return _volume_trial_data(source, data, protocol, splits, lists)
    qualifying, pad_shape = source.qualifying([c for r in ROLES for c in splits[r]])
    refs = _select(qualifying, splits, protocol)
    built = {}
    for i, role in enumerate(ROLES):
        rng = np.random.default_rng([protocol.split_seed, protocol.fold, _CORNER_STREAM, i])
        built[role] = _build_set(source, refs[role], pad_shape, rng, role != "unlabelled")
    sample_shape = built["labelled"].images.shape[1:]  # type: ignore[union-attr]  # never empty
    sets = {role: s if s is not None else SliceSet.empty(*sample_shape) for role, s in built.items()}
    return TrialData(
        **sets,
        splits=splits,
        fingerprint=trial_fingerprint(source.fingerprint, protocol),
        in_channels=sets["test"].images.shape[1],
        data_fingerprint=source.fingerprint,
        root=source.root,
        cases=list(source.cases),
        geometry=source.geometry(list(splits["test"])),
        lists=lists,
        num_classes=data.num_classes,
        class_names=source.class_names,
    )


def split_lists(data: DataSpec, root: Path) -> CaseLists:
    """The fixed lists of the raw dataset ``data`` (``protocol.split: lists``)."""
    if data.root is None:
        raise DataError("split: lists reads the list files of a raw dataset (data.root); prepared caches and "
                        "phantoms keep none")
    return fixed_lists(data.layout, root)


def _volume_trial_data(source: SliceSource, data: DataSpec, protocol: ProtocolSpec, splits: Splits,
                       lists: CaseLists | None) -> TrialData:
    """A 3D trial's whole volumes per role (:mod:`mismatch.data.volumes3d`)."""
    if not isinstance(source, RawSource):
        raise DataError("3D trials read raw volumes (root or synthetic), not a prepared slice cache")
    sets = load_volume_sets(source.layout, source.root, data, splits)
    return TrialData(
        **sets,
        splits=splits,
        fingerprint=trial_fingerprint(source.fingerprint, protocol),
        in_channels=max(s.channels for s in sets.values()),
        data_fingerprint=source.fingerprint,
        root=source.root,
        cases=list(source.cases),
        geometry=volume_geometry(sets),
        lists=lists,
        num_classes=data.num_classes,
        class_names=source.class_names,
        spatial_dims=3,
        window=VolumeWindow.from_spec(data),
    )


def open_source(data: DataSpec, cache_dir: Path | None = None) -> SliceSource:
    """The source named by ``data``, its fingerprint checked against ``data.fingerprint``."""
    source: SliceSource
    if data.prepared is not None:
        source = PreparedSource(open_prepared(data.prepared), data)
    else:
        source = RawSource(data, cache_dir)
    if data.fingerprint is not None and data.fingerprint != source.fingerprint:
        what = "the prepared cache" if data.prepared is not None else "data"
        raise FingerprintMismatchError(
            f"{what} in {source.root} with this recipe have fingerprint {source.fingerprint}, "
            f"but the spec pins {data.fingerprint}"
        )
    return source


class RawSource:
    """A raw dataset (``root`` or ``synthetic``) prepared case by case."""

    def __init__(self, data: DataSpec, cache_dir: Path | None = None) -> None:
        self.data = data
        self.root = dataset_root(data, cache_dir)
        self.layout = get_layout(data.layout)
        self.cases = self.layout.list_cases(self.root)
        if not self.cases:
            raise DataError(f"no cases found in {self.root}")
        self.class_names = class_names(self.layout, self.root, data.classes)
        self._geometry: dict[str, CaseGeometry] = {}

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of every file of every case (read once, when first asked: the study driver's
        data check opens a source only to list and split its cases unless a fingerprint is pinned)."""
        return data_fingerprint(self.root, self.layout, self.cases, self.data)

    def qualifying(self, cases: list[str]) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
        qualifying, height, width = {}, 0, 0
        for case in cases:
            label = self._read_label(case)  # (S, H, W)
            mask = pp.label_map(label, self.data.foreground_labels, self.data.classes)
            qualifying[case] = pp.qualifying_slices(mask, self.data.min_foreground)
            height, width = max(height, label.shape[1]), max(width, label.shape[2])
        return qualifying, (height, width)

    def geometry(self, cases: list[str]) -> dict[str, CaseGeometry]:
        for case in cases:
            if case not in self._geometry:
                self._read_label(case)
        return {case: self._geometry[case] for case in cases}

    def _read_label(self, case: str) -> np.ndarray:
        """A case's label; its grid and spacing are kept for :meth:`geometry`."""
        label, spacing = self.layout.load_label_spacing(self.root, case, self.data.label_values)
        self._geometry[case] = CaseGeometry(tuple(label.shape), spacing)  # type: ignore[arg-type]
        return label

    def build(
        self, chosen: dict[str, np.ndarray], pad_shape: tuple[int, int], rng: np.random.Generator,
        expose_labels: bool,
    ) -> SliceSet:
        parts = [self._case_samples(case_id, index, pad_shape, rng) for case_id, index in chosen.items()]
        out = SliceSet.concatenate(parts)
        if not expose_labels:
            out.labels = np.zeros_like(out.labels)
        return out

    def _case_samples(
        self, case_id: str, index: np.ndarray, pad_shape: tuple[int, int], rng: np.random.Generator
    ) -> SliceSet:
        case = self.layout.load_case(self.root, case_id, self.data.label_values)
        image = prepare_image(case, self.data)
        mask = pp.label_map(case.label, self.data.foreground_labels, self.data.classes)
        return case_samples(case_id, image, mask, index, self.data, pad_shape, rng)


class PreparedSource:
    """A prepared cache whose recipe equals the spec's."""

    def __init__(self, prepared: PreparedDataset, data: DataSpec) -> None:
        prepared.require_recipe(recipe(data))
        self.prepared = prepared
        self.root = prepared.path
        self.cases = prepared.cases
        self.fingerprint = prepared.fingerprint
        self.class_names = prepared.class_names(data.classes)

    def qualifying(self, cases: list[str]) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
        return self.prepared.qualifying(cases), self.prepared.slice_shape(cases)

    def build(
        self, chosen: dict[str, np.ndarray], pad_shape: tuple[int, int], rng: np.random.Generator,
        expose_labels: bool,
    ) -> SliceSet:
        return self.prepared.gather(chosen, pad_shape, rng, expose_labels)

    def geometry(self, cases: list[str]) -> dict[str, CaseGeometry]:
        return self.prepared.geometry(cases)


def dataset_root(data: DataSpec, cache_dir: Path | None = None) -> Path:
    """The folder the data are read from: ``data.root``, the cached phantom, or the prepared cache."""
    if data.synthetic is not None:
        return synthetic_dataset(data.synthetic, cache_dir)
    root = Path(data.root if data.root is not None else data.prepared).expanduser()  # type: ignore[arg-type]
    if not root.is_dir():
        what = "dataset root" if data.root is not None else "prepared cache"
        raise DataError(f"{what} not found: {root}")
    return root


def _select(qualifying: dict[str, np.ndarray], splits: Splits, protocol: ProtocolSpec) -> dict[str, list[SliceRef]]:
    rng = np.random.default_rng([protocol.split_seed, protocol.fold, _UNLABELLED_STREAM])
    draw = protocol.label_draw
    start = np.random.default_rng([protocol.split_seed, protocol.fold, _LABEL_DRAW_STREAM, draw]) if draw else None
    return {
        "labelled": select_labelled(qualifying, splits["labelled"], protocol.labelled_slices, start),
        "unlabelled": select_unlabelled(qualifying, splits["unlabelled"], protocol.unlabelled_slices, rng),
        "validation": all_qualifying(qualifying, splits["validation"]),
        "test": all_qualifying(qualifying, splits["test"]),
    }


def _build_set(
    source: SliceSource,
    refs: list[SliceRef],
    pad_shape: tuple[int, int],
    rng: np.random.Generator,
    expose_labels: bool,
) -> SliceSet | None:
    """The samples of the slices named in ``refs``, case by case in ``refs`` order.

    None when ``refs`` is empty (the caller knows the sample shape from another role).
    """
    by_case: dict[str, list[int]] = {}
    for case, s in refs:
        by_case.setdefault(case, []).append(s)
    if not by_case:
        return None
    chosen = {case: np.array(index, dtype=np.int64) for case, index in by_case.items()}
    return source.build(chosen, pad_shape, rng, expose_labels)


def n_folds_of(data: DataSpec, protocol: ProtocolSpec, cache_dir: Path | None = None) -> int:
    """How many folds the dataset named by ``data`` gives under ``protocol`` (for ``fold: all``)."""
    if protocol.split == "lists":
        return 1
    if data.synthetic is not None:
        count = data.synthetic.cases
    elif data.prepared is not None:
        count = len(open_prepared(data.prepared).cases)
    else:
        count = len(get_layout(data.layout).list_cases(dataset_root(data, cache_dir)))
    return n_folds(count - protocol.tuning_cases, protocol.labelled_cases)  # held-out cases make no fold
