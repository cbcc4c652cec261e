"""Datasets on disk, checks, presets, prepared caches, synthetic phantoms, folds and selection.

The training loop calls :func:`load_trial_data`; everything else is exposed for tools,
tests and the ``mismatch data`` commands (``check`` is :func:`check_dataset`, ``prepare``
is :func:`prepare_dataset`, ``synth`` is :func:`write_synthetic_dataset`).
"""

from mismatch.data.cache import PreparedDataset, PrepareResult, open_prepared, prepare_dataset
from mismatch.data.check import CheckReport, Problem, check_dataset
from mismatch.data.errors import (
    DataCheckError,
    DataError,
    FileProblemError,
    FingerprintMismatchError,
    LeakageError,
    OutputExistsError,
    SplitError,
)
from mismatch.data.layouts import Layout, get_layout, list_layouts, register_layout
from mismatch.data.msd import DatasetInfo, list_cases, load_case, load_label, read_dataset_json
from mismatch.data.splits import (
    ROLES,
    check_splits,
    load_splits,
    make_all_splits,
    make_splits,
    n_folds,
    save_splits,
)
from mismatch.data.synth import make_phantom, synthetic_dataset, write_synthetic_dataset
from mismatch.data.trial_data import SliceSet, TrialData, load_trial_data, n_folds_of
from mismatch.data.volumes import Case, CaseSources, read_volume

__all__ = [
    "Case",
    "CaseSources",
    "CheckReport",
    "DataCheckError",
    "DataError",
    "DatasetInfo",
    "FileProblemError",
    "FingerprintMismatchError",
    "Layout",
    "LeakageError",
    "OutputExistsError",
    "PrepareResult",
    "PreparedDataset",
    "Problem",
    "ROLES",
    "SliceSet",
    "SplitError",
    "TrialData",
    "check_dataset",
    "check_splits",
    "get_layout",
    "list_cases",
    "list_layouts",
    "load_case",
    "load_label",
    "load_splits",
    "load_trial_data",
    "make_all_splits",
    "make_phantom",
    "make_splits",
    "n_folds",
    "n_folds_of",
    "open_prepared",
    "prepare_dataset",
    "read_dataset_json",
    "read_volume",
    "register_layout",
    "save_splits",
    "synthetic_dataset",
    "write_synthetic_dataset",
]
