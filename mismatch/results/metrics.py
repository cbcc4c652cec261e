"""Per-image segmentation and calibration metrics, and pooling them over many images.

Every per-image function takes a probability map ``prob`` (foreground probability in [0, 1])
and a binary ground truth ``label`` of the same shape, as NumPy arrays. The prediction is
``prob >= THRESHOLD``. Names mean what they say: ``iou`` is foreground IoU, ``dice`` is
foreground Dice, and ``mean_dice_2class`` is the mean of foreground and background Dice, the
number the authors' code reported as "IoU" (see docs/results-schema.md).

Empty-set conventions (one place, used by training, evaluation and the report):

- Empty foreground: if neither the ground truth nor the prediction has foreground, IoU and
  Dice are 1; if only the prediction has foreground, they are 0.
- ECE of an empty set of pixels (no pixel in any bin) is NaN, see :func:`ece_from_bins`.
- A reliability bin without pixels has NaN accuracy and confidence, see :func:`reliability`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mismatch.results.schema import BIN_PARTS, N_BINS, THRESHOLD, bin_column, bin_columns


def confusion(prob: np.ndarray, label: np.ndarray) -> dict[str, int]:
    """TP, FP, FN, TN pixel counts after thresholding ``prob`` at ``THRESHOLD``."""
    pred = prob >= THRESHOLD
    truth = label.astype(bool)
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(pred.size - tp - fp - fn)}


def _ratio(num: int, den: int) -> float:
    """num / den with the empty-foreground convention (0 / 0 is a perfect score)."""
    return 1.0 if den == 0 else num / den


def iou_dice(tp: int, fp: int, fn: int) -> tuple[float, float]:
    """Foreground IoU and Dice from pixel counts."""
    return _ratio(tp, tp + fp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def mean_dice_2class(tp: int, fp: int, fn: int, tn: int) -> float:
    """Mean over foreground and background of the Dice score (the authors' "IoU")."""
    fg = _ratio(2 * tp, 2 * tp + fp + fn)
    bg = _ratio(2 * tn, 2 * tn + fn + fp)
    return (fg + bg) / 2


def reliability_bins(prob: np.ndarray, label: np.ndarray, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per-bin sums of binary confidence max(p, 1-p) over equal bins of [0.5, 1].

    Returns ``count``, ``conf_sum`` and ``correct_sum`` arrays of length ``n_bins``: sums, not
    means, so that reliability diagrams over any set of images aggregate exactly.
    """
    p = prob.astype(np.float64).ravel()
    pred = p >= THRESHOLD
    conf = np.where(pred, p, 1.0 - p)  # in [0.5, 1]
    correct = pred == label.astype(bool).ravel()
    # Bin k covers [edge_k, edge_k+1); digitize on the inner edges puts 1.0 in the last bin
    # and, unlike arithmetic on (conf - 0.5), puts a confidence of exactly 0.6 in bin 1.
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    idx = np.digitize(conf, edges[1:-1])
    return {
        "count": np.bincount(idx, minlength=n_bins).astype(np.int64),
        "conf_sum": np.bincount(idx, weights=conf, minlength=n_bins),
        "correct_sum": np.bincount(idx, weights=correct, minlength=n_bins).astype(np.int64),
    }


def ece_from_bins(count: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray) -> float:
    """Expected calibration error: sum over bins |B|/n |acc(B) - conf(B)| = sum |correct - conf| / n.

    With no pixel at all (n = 0) the ECE is NaN, not 0: the error of an empty set is undefined,
    and 0 would claim perfect calibration, pulling means over trials or decoders down where
    there was nothing to measure. NaN is skipped by the report's means (``mean_std``) and
    shown as a blank. A real image always has pixels, so stored rows never hold this NaN.
    """
    n = float(np.sum(count))
    if n == 0:
        return float("nan")
    return float(np.abs(np.asarray(correct_sum, float) - np.asarray(conf_sum, float)).sum() / n)


def reliability(count: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin accuracy and mean confidence from summed bins (NaN for empty bins)."""
    count = np.asarray(count, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, np.asarray(correct_sum, float) / count, np.nan)
        conf = np.where(count > 0, np.asarray(conf_sum, float) / count, np.nan)
    return acc, conf


def brier(prob: np.ndarray, label: np.ndarray) -> float:
    """Mean squared difference between foreground probability and the binary label."""
    diff = prob.astype(np.float64) - label.astype(np.float64)
    return float(np.mean(diff * diff))


def bin_values(bins: Mapping[str, np.ndarray], n_bins: int = N_BINS) -> dict[str, float | int]:
    """Reliability-bin sums as the flat bin columns of a row (counts int, confidence float)."""
    row: dict[str, float | int] = {}
    for k in range(n_bins):
        row[bin_column(k, "count")] = int(bins["count"][k])
        row[bin_column(k, "conf_sum")] = float(bins["conf_sum"][k])
        row[bin_column(k, "correct_sum")] = int(bins["correct_sum"][k])
    return row


def image_metrics(prob: np.ndarray, label: np.ndarray, n_bins: int = N_BINS) -> dict[str, float | int]:
    """Every per-image metric of the results schema, as one flat dict of scalars."""
    if prob.shape != label.shape:
        raise ValueError(f"prob shape {prob.shape} does not match label shape {label.shape}")
    counts = confusion(prob, label)
    iou, dice = iou_dice(counts["tp"], counts["fp"], counts["fn"])
    bins = reliability_bins(prob, label, n_bins)
    row: dict[str, float | int] = {"fg_pixels": int(np.count_nonzero(label)), **counts}
    row.update(
        iou=iou,
        dice=dice,
        mean_dice_2class=mean_dice_2class(**counts),
        ece=ece_from_bins(bins["count"], bins["conf_sum"], bins["correct_sum"]),
        brier=brier(prob, label),
    )
    row.update(bin_values(bins, n_bins))
    if not np.isfinite(prob).all():  # NaN would threshold as background: no metric of it holds
        row.update({name: float("nan") for name in ("iou", "dice", "mean_dice_2class", "ece", "brier")})
    return row


def add_bins(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Element-wise sum of two sets of bin sums (or of any dicts of summable values)."""
    return {k: a[k] + b[k] for k in a}


def pooled_bins(rows: pd.DataFrame, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """The bin columns of ``rows`` summed over the rows: exact bins of all their pixels."""
    return {part: rows[bin_columns(part, n_bins)].sum().to_numpy(dtype=float) for part in BIN_PARTS}


def pooled_calibration(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per-bin accuracy, confidence and count, and the ECE of every pixel of ``rows`` together."""
    sums = pooled_bins(rows)
    acc, conf = reliability(sums["count"], sums["conf_sum"], sums["correct_sum"])
    return acc, conf, sums["count"], ece_from_bins(sums["count"], sums["conf_sum"], sums["correct_sum"])
