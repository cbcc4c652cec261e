"""The results schema: table and column names, version, metrics, pooling and row builders.

The one authority on the Parquet rows (docs/results-schema.md). NumPy and pandas only: the
trial code, the study store and the report all import it, and none of them spells a column
list of its own.
"""

from mismatch.results.metrics import (
    add_bins,
    bin_values,
    brier,
    confusion,
    ece_from_bins,
    image_metrics,
    iou_dice,
    mean_dice_2class,
    pooled_bins,
    pooled_calibration,
    reliability,
    reliability_bins,
)
from mismatch.results.schema import (
    BIN_PARTS,
    CASE_COLUMNS,
    CASE_METRICS,
    COMPLETED,
    FAILED,
    IDENTITY,
    IMAGE_KEY,
    IMAGE_METRICS,
    N_BINS,
    OVERLAP_METRICS,
    SCHEMA_VERSION,
    STRING_IDENTITY,
    SURFACE_METRICS,
    TABLES,
    THRESHOLD,
    TRIAL_BUDGET,
    TRIAL_COLUMNS,
    TRIAL_PROTOCOL,
    VARIANT,
    bin_centres,
    bin_column,
    bin_columns,
    empty_surface_values,
    table_columns,
)
from mismatch.results.versions import UPGRADES, Upgrade, read_columns, upgrade

__all__ = [
    "BIN_PARTS", "CASE_COLUMNS", "CASE_METRICS", "COMPLETED", "FAILED", "IDENTITY", "IMAGE_KEY", "IMAGE_METRICS",
    "N_BINS", "OVERLAP_METRICS", "SCHEMA_VERSION", "STRING_IDENTITY", "SURFACE_METRICS", "TABLES",
    "THRESHOLD", "TRIAL_BUDGET", "TRIAL_COLUMNS", "TRIAL_PROTOCOL", "UPGRADES", "VARIANT", "Upgrade", "add_bins",
    "bin_centres", "bin_column", "bin_columns", "bin_values", "brier", "confusion", "ece_from_bins",
    "empty_surface_values", "image_metrics", "iou_dice", "mean_dice_2class", "pooled_bins", "pooled_calibration",
    "read_columns", "reliability",
    "reliability_bins", "table_columns", "upgrade",
]
