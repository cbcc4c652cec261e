"""Dataset layouts on disk, looked up by the name used in ``DataSpec.layout``.

A layout knows how to list the cases of a dataset root, which files hold each case's
channels and label, the channel names, the label values the dataset may contain and the
dataset-level files (e.g. ``dataset.json``). Reading and checking a case is shared by
every layout (:meth:`Layout.load_case`, :func:`mismatch.data.check.check_dataset`).

Built in: ``msd`` (Medical Segmentation Decathlon / nnU-Net raw), ``carve14`` (CARVE14
MetaImage files), ``brats2018`` (one folder per BRATS case), ``la2018-h5`` and ``acdc-h5``
(the HDF5 distributions of the LA and ACDC benchmarks, :mod:`mismatch.data.h5layouts`). A new layout is one module
of :mod:`mismatch.data` that calls :func:`register_layout`: the registry
(:data:`mismatch.config.LAYOUTS`) imports every module of the package on its first lookup,
so there is no list to edit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mismatch.config import LAYOUTS
from mismatch.data.errors import DataError, FileProblemError
from mismatch.data.volumes import (
    H5_LABEL,
    Case,
    CaseSources,
    Problem,
    Spacing,
    as_label,
    data_files,
    read_case,
    read_volume,
)
from mismatch.registry import UnknownNameError


def _no_files(root: Path) -> list[Path]:
    return []


def _any_labels(root: Path) -> tuple[int, ...] | None:
    return None


def _no_problems(root: Path, cases: Sequence[str]) -> list[Problem]:
    return []


@dataclass(frozen=True)
class Layout:
    """How one on-disk layout is read.

    ``list_cases(root)``: sorted case ids (every case with an image or a label file, so an
    unpaired file shows up as a case with a missing partner). ``sources(root, case)``: the
    files of a case. ``channel_names(root)``: the image channels. ``label_values(root)``:
    the label values allowed (None: any non-negative integer). ``meta_files(root)``:
    dataset-level files that enter the data fingerprint. ``stray_files(root, cases)``:
    layout-specific problems with files that belong to no case. ``classes``: the names of
    the foreground classes 1..K of a multi-class layout (e.g. ACDC's RV, Myo, LV); a spec on
    such a layout names its ``classes`` (multi-class) or its ``foreground_labels`` (one binary
    task), never a silent binarisation. ``label_names(root)``: the name of each label value
    that the dataset itself declares (msd: ``dataset.json`` ``labels``); None: ``classes``.
    """

    name: str
    list_cases: Callable[[Path], list[str]]
    sources: Callable[[Path, str], CaseSources]
    channel_names: Callable[[Path], tuple[str, ...]]
    label_values: Callable[[Path], tuple[int, ...] | None] = _any_labels
    meta_files: Callable[[Path], list[Path]] = _no_files
    stray_files: Callable[[Path, Sequence[str]], list[Problem]] = _no_problems
    classes: tuple[str, ...] = ()
    label_names: Callable[[Path], dict[int, str]] | None = None
    description: str = field(default="", compare=False)

    def load_case(self, root: Path, case_id: str, label_values: Sequence[int] | None = None) -> Case:
        """Load one case: image float32 (C, S, H, W), label (S, H, W); the first problem raises.

        ``label_values`` are the label values allowed (default: the layout's).
        """
        root = Path(root)
        allowed = label_values if label_values is not None else self.label_values(root)
        problems, case = read_case(case_id, self.sources(root, case_id), self.channel_names(root), allowed)
        if problems:
            path, problem = problems[0]
            raise FileProblemError(path, problem)
        assert case is not None
        return case

    def load_label(self, root: Path, case_id: str, label_values: Sequence[int] | None = None) -> np.ndarray:
        """Only the label (S, H, W) of a case: cheaper than :meth:`load_case` when selecting slices."""
        return self.load_label_spacing(root, case_id, label_values)[0]

    def load_label_spacing(
        self, root: Path, case_id: str, label_values: Sequence[int] | None = None
    ) -> tuple[np.ndarray, Spacing]:
        """The label (S, H, W) of a case and its voxel spacing in mm along (S, H, W).

        The label's header gives the spacing; :meth:`load_case` checks that it equals the image's.
        """
        sources = self.sources(Path(root), case_id)
        path = sources.label
        volume = read_volume(path, "label", sources.h5, H5_LABEL)
        if volume.data.shape[0] != 1:
            raise FileProblemError(path, f"a label must be one 3D volume, got shape {volume.file_shape}")
        allowed = label_values if label_values is not None else self.label_values(Path(root))
        return as_label(volume.data[0], path, allowed), volume.spacing

    def files(self, root: Path, case_id: str) -> list[Path]:
        """Every file whose bytes define the case (MetaImage data files included), each once, for fingerprints."""
        src = self.sources(Path(root), case_id)
        return list(dict.fromkeys(f for path in (*src.images, src.label) for f in data_files(path)))



def register_layout(layout: Layout) -> Layout:
    """Register ``layout`` under its name; a second layout with the same name is an error."""
    return LAYOUTS.register(layout.name, layout)


def get_layout(name: str) -> Layout:
    """The layout registered as ``name``; an unknown name is a :class:`DataError` that
    suggests the closest known name and lists them all."""
    try:
        return LAYOUTS.get(name)
    except UnknownNameError as err:
        raise DataError(str(err)) from None


def check_foreground(layout: str | Layout) -> list[int] | None:
    """The foreground labels ``data check`` counts for a multi-class layout when none are given
    (every class, 1..K), so its empty-label check needs no choice of class; None otherwise."""
    layout = get_layout(layout) if isinstance(layout, str) else layout
    return list(range(1, len(layout.classes) + 1)) if layout.classes else None


def class_names(layout: str | Layout, root: Path | None, classes: Sequence[int] | None) -> tuple[str, ...]:
    """Names of the foreground classes of a task: ``("foreground",)`` when binary (``classes``
    None), else the name of each label value of ``classes`` (the dataset's own names, then the
    layout's ``classes``, then ``class <value>``)."""
    if classes is None:
        return ("foreground",)
    layout = get_layout(layout) if isinstance(layout, str) else layout
    names: dict[int, str] = dict(enumerate(layout.classes, 1))
    if layout.label_names is not None and root is not None:
        names.update(layout.label_names(Path(root)))
    return tuple(names.get(int(v), f"class {int(v)}") for v in classes)


def list_layouts() -> list[str]:
    """Names of every registered layout."""
    return LAYOUTS.names()
