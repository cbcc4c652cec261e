"""Dataset layouts on disk, looked up by the name used in ``DataSpec.layout``.

A layout knows how to list the cases of a dataset root, which files hold a case, and how
to load a case as arrays. ``"msd"`` (the Medical Segmentation Decathlon / nnU-Net raw
layout) is built in; other layouts (BRATS 2018, CARVE14) register themselves the same way.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from mismatch.data.errors import DataError

if TYPE_CHECKING:
    from mismatch.data.msd import Case

# Modules that register the built-in layouts; imported on first lookup, not at import time.
_BUILTIN_MODULES = ("mismatch.data.msd",)


@dataclass(frozen=True)
class Layout:
    """How one on-disk layout is read.

    ``files(root, case_id)`` returns every file whose content defines the case (used for
    the data fingerprint); ``meta_files(root)`` the dataset-level files (e.g. dataset.json).
    """

    name: str
    list_cases: Callable[[Path], list[str]]
    load_case: Callable[[Path, str], "Case"]
    load_label: Callable[[Path, str], np.ndarray]
    files: Callable[[Path, str], list[Path]]
    meta_files: Callable[[Path], list[Path]]


_LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    """Register ``layout`` under its name; a second layout with the same name is an error."""
    if layout.name in _LAYOUTS:
        raise ValueError(f"dataset layout {layout.name!r} is already registered")
    _LAYOUTS[layout.name] = layout
    return layout


def get_layout(name: str) -> Layout:
    """The layout registered as ``name``; an unknown name lists the known ones."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    try:
        return _LAYOUTS[name]
    except KeyError:
        known = ", ".join(sorted(_LAYOUTS)) or "none"
        raise DataError(f"unknown dataset layout {name!r} (known: {known})") from None


def list_layouts() -> list[str]:
    """Names of every registered layout."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    return sorted(_LAYOUTS)
