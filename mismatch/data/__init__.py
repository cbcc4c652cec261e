"""Datasets on disk, synthetic phantoms, preparation, folds and label-count selection.

The training loop calls :func:`load_trial_data`; everything else is exposed for tools,
tests and the ``mismatch data`` commands.
"""

from mismatch.data.errors import (
    DataError,
    FingerprintMismatchError,
    LeakageError,
    OutputExistsError,
    SplitError,
)
from mismatch.data.layouts import Layout, get_layout, list_layouts, register_layout
from mismatch.data.msd import Case, DatasetInfo, list_cases, load_case, load_label, read_dataset_json
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

__all__ = [
    "Case",
    "DataError",
    "DatasetInfo",
    "FingerprintMismatchError",
    "Layout",
    "LeakageError",
    "OutputExistsError",
    "ROLES",
    "SliceSet",
    "SplitError",
    "TrialData",
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
    "read_dataset_json",
    "register_layout",
    "save_splits",
    "synthetic_dataset",
    "write_synthetic_dataset",
]
