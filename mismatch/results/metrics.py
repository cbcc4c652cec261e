"""Per-image segmentation and calibration metrics, and pooling them over many images.

Every per-image function takes a probability map ``prob`` (foreground probability in [0, 1])
and a binary ground truth ``label`` of the same shape, as NumPy arrays. The prediction is
``prob >= THRESHOLD``. A multi-class task (C > 2 classes) gives ``prob`` (C, *spatial) class
probabilities and ``label`` (*spatial) class indices 0..C-1; the prediction is the argmax
(:func:`class_prediction`), each foreground class is measured as its own binary mask
(:func:`class_metrics`) and the per-image row holds the mean over foreground classes
(:func:`image_metrics`; docs/results-schema.md, "Multi-class tasks"). Names mean what they say: ``iou`` is foreground IoU, ``dice`` is
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
    return mask_confusion(prob >= THRESHOLD, label.astype(bool))


def mask_confusion(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """TP, FP, FN, TN pixel counts of a predicted and a true binary mask (bool arrays)."""
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
    return confidence_bins(conf, pred == label.astype(bool).ravel(), n_bins)


def confidence_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per-bin sums of confidences ``conf`` and of ``correct`` (flat arrays) over equal bins of
    [0.5, 1]; a confidence below 0.5 (top-label, C > 2) counts in bin 0."""
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
    """Every per-image metric of the results schema, as one flat dict of scalars.

    ``prob`` with one axis more than ``label`` holds class probabilities (C, *spatial):
    :func:`multiclass_image_metrics`.
    """
    if prob.ndim == label.ndim + 1:
        return multiclass_image_metrics(prob, label, n_bins)
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


def class_prediction(prob: np.ndarray) -> np.ndarray:
    """The predicted class of each pixel of ``prob`` (C, *spatial): the argmax over classes,
    ties going to the higher class (as the binary ``p >= THRESHOLD`` gives foreground at 0.5)."""
    return (prob.shape[0] - 1 - np.argmax(prob[::-1], axis=0)).astype(np.int64)


def top_label_bins(prob: np.ndarray, label: np.ndarray, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Reliability-bin sums of the top-label confidence (the largest class probability) and
    whether the predicted class is the true one, for ``prob`` (C, *spatial), ``label`` class indices.

    For C = 2 and ``prob`` = [1 - p, p] these are :func:`reliability_bins` of ``p`` exactly.
    """
    p = prob.astype(np.float64).reshape(prob.shape[0], -1)
    pred = class_prediction(p)
    conf = p[pred, np.arange(p.shape[1])]
    return confidence_bins(conf, pred == label.astype(np.int64).ravel(), n_bins)


def multiclass_brier(prob: np.ndarray, label: np.ndarray) -> float:
    """Multi-class Brier score: the mean over pixels of sum_c (p_c - [label = c])^2."""
    p = prob.astype(np.float64).reshape(prob.shape[0], -1)
    onehot = np.arange(p.shape[0])[:, None] == label.astype(np.int64).ravel()[None]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=0)))


def class_counts(pred: np.ndarray, label: np.ndarray, k: int) -> dict[str, float | int]:
    """Class ``k``'s pixels, confusion counts, IoU, Dice and two-class mean Dice (class k vs the
    rest) from predicted and true class maps of the same shape."""
    truth = label == k
    counts = mask_confusion(pred == k, truth)
    iou, dice = iou_dice(counts["tp"], counts["fp"], counts["fn"])
    return {"fg_pixels": int(np.count_nonzero(truth)), **counts, "iou": iou, "dice": dice,
            "mean_dice_2class": mean_dice_2class(**counts)}


def class_metrics(prob: np.ndarray, label: np.ndarray) -> list[dict[str, float | int]]:
    """One dict per foreground class 1..C-1 of ``prob`` (C, *spatial): ``class_index`` and
    :func:`class_counts` (a non-finite probability makes the overlap metrics NaN)."""
    pred = class_prediction(prob)
    finite = bool(np.isfinite(prob).all())
    out = []
    for k in range(1, prob.shape[0]):
        row = {"class_index": k, **class_counts(pred, label, k)}
        if not finite:
            row.update({name: float("nan") for name in ("iou", "dice", "mean_dice_2class")})
        out.append(row)
    return out


def foreground_mean(per_class: list[Mapping[str, float | int]], names: tuple[str, ...]) -> dict[str, float]:
    """The mean over foreground classes of each of ``names`` (NaN values skipped; all NaN: NaN)."""
    out = {}
    for name in names:
        values = np.array([float(c[name]) for c in per_class], dtype=float)
        out[name] = float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan")
    return out


def multiclass_image_metrics(prob: np.ndarray, label: np.ndarray, n_bins: int = N_BINS) -> dict[str, float | int]:
    """The per-image row of a C-class image, ``prob`` (C, *spatial), ``label`` class indices.

    ``fg_pixels`` counts pixels of any foreground class; ``tp``, ``fp``, ``fn``, ``tn`` are
    summed over the foreground classes (each class against the rest); ``iou``, ``dice`` and
    ``mean_dice_2class`` are the means over foreground classes; ``ece`` and the bins use the
    top-label confidence; ``brier`` is the multi-class Brier score.
    """
    if prob.shape[1:] != label.shape:
        raise ValueError(f"prob shape {prob.shape} does not match label shape {label.shape} (C, *spatial)")
    per_class = class_metrics(prob, label)
    bins = top_label_bins(prob, label, n_bins)
    row: dict[str, float | int] = {"fg_pixels": int(np.count_nonzero(label))}
    row.update({c: int(sum(k[c] for k in per_class)) for c in ("tp", "fp", "fn", "tn")})
    row.update(foreground_mean(per_class, ("iou", "dice", "mean_dice_2class")))
    row.update(ece=ece_from_bins(bins["count"], bins["conf_sum"], bins["correct_sum"]),
               brier=multiclass_brier(prob, label))
    row.update(bin_values(bins, n_bins))
    if not np.isfinite(prob).all():
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
