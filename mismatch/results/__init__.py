"""The results schema: table and column names, version, metrics, pooling and row builders.

The one authority on the Parquet rows (docs/results-schema.md). NumPy and pandas only: the
trial code, the study store and the report all import it, and none of them spells a column
list of its own.
"""

from mismatch.results.metrics import (
    add_bins,
    bin_values,
    brier,
    class_counts,
    class_metrics,
    class_prediction,
    confidence_bins,
    confusion,
    ece_from_bins,
    foreground_mean,
    image_metrics,
    iou_dice,
    mask_confusion,
    mean_dice_2class,
    multiclass_brier,
    multiclass_image_metrics,
    pooled_bins,
    pooled_calibration,
    reliability,
    reliability_bins,
    top_label_bins,
)
from mismatch.results.schema import (
    BIN_PARTS,
    CASE_COLUMNS,
    CASE_METRICS,
    CLASS_COLUMNS,
    CLASS_KEY,
    CLASS_LEVELS,
    CLASS_METRICS,
    COMPLETED,
    FAILED,
    IDENTITY,
    IMAGE_KEY,
    IMAGE_METRICS,
    N_BINS,
    OVERLAP_METRICS,
    PRUNED,
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
    "BIN_PARTS", "CASE_COLUMNS", "CASE_METRICS", "CLASS_COLUMNS", "CLASS_KEY", "CLASS_LEVELS", "CLASS_METRICS",
    "COMPLETED", "FAILED", "PRUNED", "IDENTITY", "IMAGE_KEY", "IMAGE_METRICS",
    "N_BINS", "OVERLAP_METRICS", "SCHEMA_VERSION", "STRING_IDENTITY", "SURFACE_METRICS", "TABLES",
    "THRESHOLD", "TRIAL_BUDGET", "TRIAL_COLUMNS", "TRIAL_PROTOCOL", "UPGRADES", "VARIANT", "Upgrade", "add_bins",
    "bin_centres", "bin_column", "bin_columns", "bin_values", "brier", "class_counts", "class_metrics",
    "class_prediction", "confidence_bins", "confusion", "ece_from_bins", "empty_surface_values", "foreground_mean",
    "image_metrics", "iou_dice", "mask_confusion", "mean_dice_2class", "multiclass_brier",
    "multiclass_image_metrics", "pooled_bins", "pooled_calibration", "read_columns", "reliability",
    "reliability_bins", "table_columns", "top_label_bins", "upgrade",
]
