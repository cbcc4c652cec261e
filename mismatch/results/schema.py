"""The names of the results schema (docs/results-schema.md): tables, columns, version.

Every module that writes or reads results rows takes its column names from here; the row
builders in :mod:`mismatch.results.rows` put them in the order this module lists them.
"""

from __future__ import annotations

import numpy as np

SCHEMA_VERSION = 2
"""Version of the stored rows. 2 added the ``label_draw`` identity column and the trials
columns ``stream``, ``budget``, ``optimizer_steps`` and ``labelled_presentations``
(:mod:`mismatch.results.versions` upgrades version-1 rows)."""

THRESHOLD = 0.5
"""A pixel is predicted foreground when its foreground probability is at least this."""

N_BINS = 5
"""Reliability bins: equal bins of binary confidence max(p, 1 - p) over [0.5, 1]."""

TABLES = ("trials", "images", "epochs", "decoders", "cases", "classes")
"""The Parquet tables of a study folder, one file per trial in ``<study>/<table>/``."""

IDENTITY = ("schema_version", "study", "trial_id", "method", "model", "alpha", "labelled_slices",
            "unlabelled_slices", "fold", "seed", "label_draw", "dataset_fingerprint")
"""The columns that identify a trial, first in every table (in this order)."""

STRING_IDENTITY = ("study", "trial_id", "method", "model", "dataset_fingerprint")
"""Identity columns holding strings (readers may keep them as categoricals)."""

VARIANT = ("method", "model", "alpha", "labelled_slices", "unlabelled_slices", "fold", "seed", "label_draw")
"""Identity that tells trials apart when a merged file has no ``trial_id``."""

COMPLETED, FAILED, PRUNED = "completed", "failed", "pruned"
"""Values of the trials table's ``status`` column (``pruned``: a search candidate's training run
stopped at a rung by a multi-fidelity scheduler; it has no test rows and reaches no table)."""

# images/: one row per test image (a slice or a patch of it)
IMAGE_KEY = ("case_id", "slice_index", "patch")
CONFUSION = ("tp", "fp", "fn", "tn")
OVERLAP_METRICS = ("iou", "dice", "mean_dice_2class")
"""The per-image segmentation metrics a report may rank trials by."""
IMAGE_METRICS = ("fg_pixels", *CONFUSION, *OVERLAP_METRICS, "ece", "brier")
"""Per-image metric columns before the bin columns (in row order)."""

BIN_PARTS = ("count", "conf_sum", "correct_sum")
"""The sums kept per reliability bin: pixels, summed confidence, correctly classified pixels."""


def bin_column(k: int, part: str) -> str:
    """Name of one reliability-bin column, e.g. ``bin3_conf_sum``."""
    return f"bin{k}_{part}"


def bin_columns(part: str | None = None, n_bins: int = N_BINS) -> list[str]:
    """Every reliability-bin column in row order (bin-major), or one ``part`` for each bin."""
    if part is not None:
        return [bin_column(k, part) for k in range(n_bins)]
    return [bin_column(k, p) for k in range(n_bins) for p in BIN_PARTS]


def bin_centres(n_bins: int = N_BINS) -> np.ndarray:
    """Centre of each reliability bin's confidence range (0.55, 0.65, ... for 5 bins)."""
    return np.linspace(0.5, 1.0, n_bins + 1)[:-1] + 0.25 / n_bins


# trials/: one row per trial; a failed trial has the identity, FAILED_TRIAL and TIMES only
TRIAL_PROTOCOL = ("stream", "budget")
"""The trial's stream protocol and budget (``train.stream``, ``train.budget``), in every trials row."""
TRIAL_BUDGET = ("optimizer_steps", "labelled_presentations")
"""Counted by the training loop: optimiser steps taken and labelled slices they saw (with repeats)."""
TRIAL_RESULT = ("status", "error", *TRIAL_PROTOCOL, "spec_json", "params", "train_time_s", "epochs",
                "resumed_from_epoch", *TRIAL_BUDGET, "final_loss", "final_losses_json", "best_val_iou", "final_val_iou", "code_version",
                "torch_version")
"""Columns of a completed trial's row after the identity, in row order."""
TRIAL_RUN = ("splits_json", "infer_time_per_image_s", "peak_memory_mb", "n_test_images", "device")
"""Columns of a completed trial's row measured while it ran (after TRIAL_RESULT)."""
TIMES = ("started_at", "finished_at")
FAILED_TRIAL = ("status", "error", *TRIAL_PROTOCOL, "spec_json", "code_version", "torch_version")
"""Columns of a failed trial's row after the identity (then TIMES)."""
PRUNED_TRIAL = ("status", "error", *TRIAL_PROTOCOL, "spec_json", "train_time_s", "epochs", "code_version",
                "torch_version")
"""Columns of a pruned search run's row after the identity (then TIMES): ``epochs`` trained and
their ``train_time_s``, for the search's ledger; ``error`` says at which rung."""
TRIAL_STORE = ("splits_file",)
"""Added by the store when it writes the row (``splits/<sha>.json``)."""
TRIAL_NODE = ("ray_node_id", "node_ip")
"""Added by a study run (absent for ``mismatch train``)."""
TRIAL_FUSION = ("fuse_group", "fuse_size")
"""Added by a study run: the fused group the trial trained in (``""`` alone) and the group's
size (1 alone). Rows written before fusion lack them; readers fill :data:`TRIAL_DEFAULTS`."""
TRIAL_DEFAULTS = {"fuse_group": "", "fuse_size": 1}
"""The value of an optional trials column in a row that lacks it."""
TRIAL_COLUMNS = (*IDENTITY, *TRIAL_RESULT, *TRIAL_RUN, *TIMES, *TRIAL_STORE, *TRIAL_NODE, *TRIAL_FUSION)

# epochs/: one row per epoch
LOSS_PREFIX = "loss_"
"""``loss_<term>``: one column per loss term the method returns (mean over the epoch)."""
VAL_PREFIX = "val_"
"""``val_<metric>``: mean validation metric of the epoch's weights, for OVERLAP_METRICS."""
EPOCH_COLUMNS = ("epoch", "time_s")
VAL_COLUMNS = tuple(VAL_PREFIX + m for m in OVERLAP_METRICS)

# decoders/: one row per decoder of a several-decoder network, summed over the test set
DECODER_COLUMNS = ("decoder", "decoder_name", "ece", "mean_fg_prob")
"""Per-decoder columns after the identity and before the bin columns."""


# cases/: one row per test case, on its volume reassembled from the test slices and patches
CASE_KEY = ("case_id",)
CASE_METRICS = ("dice", "iou", "hd95_mm", "assd_mm", "nsd", "nsd_tolerance_mm", "fg_voxels", "pred_voxels")
"""Per-case metrics: overlap, surface distances in mm, normalised surface Dice, voxel counts."""
CASE_GEOMETRY = ("spacing_z_mm", "spacing_y_mm", "spacing_x_mm", "n_slices", "missing_slices")
"""The volume measured: voxel spacing along slices (z), rows (y) and columns (x) from the
header; its planes (test slices); slices between its first and last plane that it lacks."""
CASE_LIB = ("surface_metrics_lib",)
"""The library and version that computed hd95_mm, assd_mm and nsd, e.g. ``monai 1.6.1``."""
CASE_COLUMNS = (*CASE_KEY, *CASE_METRICS, *CASE_GEOMETRY, *CASE_LIB)
"""Per-case columns after the identity, in row order."""
SURFACE_METRICS = ("hd95_mm", "assd_mm", "nsd")
"""The per-case metrics measured on surfaces (fixed by the empty conventions below)."""
HD_PERCENTILE = 95
"""``hd95_mm``: the larger of the two directed 95th percentiles of surface distances."""


# classes/: one row per foreground class of each test image and each test case (C > 2 tasks only)
CLASS_LEVELS = ("image", "case")
"""``level`` of a classes row: a test image (its IMAGE_KEY) or a test case (``slice_index`` -1,
``patch`` ``"case"``)."""
CASE_SLICE_INDEX, CASE_PATCH = -1, "case"
"""The IMAGE_KEY values of a case-level classes row."""
CLASS_KEY = ("level", *IMAGE_KEY, "class_index", "class_name")
"""What a classes row measures: level, image (or case), class index 1..C-1 and class name."""
CLASS_METRICS = ("fg_pixels", *CONFUSION, *OVERLAP_METRICS, *SURFACE_METRICS)
"""Per-class metrics, class k against the rest: pixels (voxels) of class k, confusion counts,
overlap, and (case rows; NaN for images) surface distances in mm and NSD."""
CLASS_COLUMNS = (*CLASS_KEY, *CLASS_METRICS)
"""Classes columns after the identity, in row order."""


def empty_surface_values(fg_voxels: int, pred_voxels: int, diagonal_mm: float) -> dict[str, float] | None:
    """The surface metrics fixed by the empty conventions; None when both masks have foreground.

    - empty truth and empty prediction: ``nsd`` 1 (nothing to find, nothing found, like
      Dice), ``hd95_mm`` and ``assd_mm`` NaN (there is no surface to measure);
    - exactly one of them empty: ``nsd`` 0 and ``hd95_mm`` = ``assd_mm`` = ``diagonal_mm``,
      the diagonal of the case's volume in mm (the largest distance it holds, as in BraTS).
      A missed structure is never a distance of 0, and never NaN that a mean would skip.
    """
    if fg_voxels and pred_voxels:
        return None
    if not fg_voxels and not pred_voxels:
        return {"hd95_mm": float("nan"), "assd_mm": float("nan"), "nsd": 1.0}
    return {"hd95_mm": float(diagonal_mm), "assd_mm": float(diagonal_mm), "nsd": 0.0}


def loss_column(term: str) -> str:
    """The epochs column of one loss term, e.g. ``loss_dice``."""
    return LOSS_PREFIX + term


def table_columns(table: str) -> tuple[str, ...]:
    """Every column a table may hold (epochs: without the ``loss_<term>`` columns)."""
    columns = {
        "trials": TRIAL_COLUMNS,
        "images": (*IDENTITY, *IMAGE_KEY, *IMAGE_METRICS, *bin_columns()),
        "epochs": (*IDENTITY, *EPOCH_COLUMNS, *VAL_COLUMNS),
        "decoders": (*IDENTITY, *DECODER_COLUMNS, *bin_columns()),
        "cases": (*IDENTITY, *CASE_COLUMNS),
        "classes": (*IDENTITY, *CLASS_COLUMNS),
    }
    if table not in columns:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    return columns[table]
