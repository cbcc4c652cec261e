"""Per-image segmentation and calibration metrics for binary segmentation.

Every function takes a probability map ``prob`` (foreground probability in [0, 1]) and a
binary ground truth ``label`` of the same shape, as NumPy arrays. The prediction is
``prob >= THRESHOLD``. Names mean what they say: ``iou`` is foreground IoU, ``dice`` is
foreground Dice, and ``mean_dice_2class`` is the mean of foreground and background Dice, the
number the authors' code reported as "IoU" (see docs/results-schema.md).

Empty-foreground convention: if neither the ground truth nor the prediction has foreground,
IoU and Dice are 1; if only the prediction has foreground, they are 0.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5
N_BINS = 5


def confusion(prob: np.ndarray, label: np.ndarray) -> dict[str, int]:
    """TP, FP, FN, TN pixel counts after thresholding ``prob`` at 0.5."""
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
    """Expected calibration error: sum over bins |B|/n |acc(B) - conf(B)|."""
    n = count.sum()
    if n == 0:
        return 0.0
    return float(np.abs(correct_sum - conf_sum).sum() / n)


def brier(prob: np.ndarray, label: np.ndarray) -> float:
    """Mean squared difference between foreground probability and the binary label."""
    diff = prob.astype(np.float64) - label.astype(np.float64)
    return float(np.mean(diff * diff))


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
    for k in range(n_bins):
        row[f"bin{k}_count"] = int(bins["count"][k])
        row[f"bin{k}_conf_sum"] = float(bins["conf_sum"][k])
        row[f"bin{k}_correct_sum"] = int(bins["correct_sum"][k])
    return row
