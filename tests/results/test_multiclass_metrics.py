"""Multi-class metrics against hand-computed 3-class images, and the binary (C = 2) rows
unchanged: the top-label calibration path on [1 - p, p] is today's binary calibration."""

from __future__ import annotations

import numpy as np
import pytest

from mismatch.results import (
    class_metrics,
    class_prediction,
    ece_from_bins,
    image_metrics,
    multiclass_brier,
    reliability_bins,
    top_label_bins,
)
from mismatch.results.rows import class_rows, image_class_records
from mismatch.results.schema import IDENTITY, table_columns

# 2 x 3 image, classes 0 (background), 1, 2. Rows: pixels; columns of PROB: class probabilities.
LABEL = np.array([[0, 1, 1], [2, 2, 2]])
PIXELS = [  # (probabilities, label) -> predicted class, top-label confidence, correct?
    [0.7, 0.2, 0.1],    # label 0: pred 0, conf 0.7, correct
    [0.1, 0.8, 0.1],    # label 1: pred 1, conf 0.8, correct
    [0.2, 0.5, 0.3],    # label 1: pred 1, conf 0.5, correct
    [0.05, 0.05, 0.9],  # label 2: pred 2, conf 0.9, correct
    [0.3, 0.4, 0.3],    # label 2: pred 1, conf 0.4, wrong
    [0.6, 0.1, 0.3],    # label 2: pred 0, conf 0.6, wrong
]
PROB = np.array(PIXELS).T.reshape(3, 2, 3)  # (C, H, W)


def test_the_prediction_is_the_argmax_and_a_tie_goes_to_the_higher_class():
    assert class_prediction(PROB).tolist() == [[0, 1, 1], [2, 1, 0]]
    assert class_prediction(np.array([[0.5], [0.5]])).tolist() == [1]  # as the binary p >= 0.5
    assert class_prediction(np.array([[0.4], [0.3], [0.3]])).tolist() == [0]


def test_per_class_counts_iou_and_dice_by_hand():
    """Class 1: truth {(0,1), (0,2)}, prediction {(0,1), (0,2), (1,1)}: TP 2, FP 1, FN 0, TN 3,
    IoU 2/3, Dice 4/5, background Dice 6/7. Class 2: truth the bottom row, prediction {(1,0)}:
    TP 1, FP 0, FN 2, TN 3, IoU 1/3, Dice 2/4, background Dice 6/8."""
    one, two = class_metrics(PROB, LABEL)
    assert {k: one[k] for k in ("class_index", "fg_pixels", "tp", "fp", "fn", "tn")} == dict(
        class_index=1, fg_pixels=2, tp=2, fp=1, fn=0, tn=3)
    assert (one["iou"], one["dice"], one["mean_dice_2class"]) == pytest.approx((2 / 3, 4 / 5, (4 / 5 + 6 / 7) / 2))
    assert {k: two[k] for k in ("class_index", "fg_pixels", "tp", "fp", "fn", "tn")} == dict(
        class_index=2, fg_pixels=3, tp=1, fp=0, fn=2, tn=3)
    assert (two["iou"], two["dice"], two["mean_dice_2class"]) == pytest.approx((1 / 3, 1 / 2, (1 / 2 + 6 / 8) / 2))


def test_the_image_row_holds_the_mean_over_foreground_classes_top_label_ece_and_multiclass_brier():
    row = image_metrics(PROB, LABEL)
    assert row["iou"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert row["dice"] == pytest.approx((4 / 5 + 1 / 2) / 2)
    assert row["mean_dice_2class"] == pytest.approx(((4 / 5 + 6 / 7) / 2 + (1 / 2 + 6 / 8) / 2) / 2)
    assert (row["fg_pixels"], row["tp"], row["fp"], row["fn"], row["tn"]) == (5, 3, 1, 2, 6)  # summed over classes
    # Top-label bins over [0.5, 1]: bin 0 holds 0.5 (correct) and 0.4 (below 0.5, wrong); bins 1-4
    # hold 0.6 (wrong), 0.7, 0.8, 0.9 (correct). ECE = (|1 - 0.9| + 0.6 + 0.3 + 0.2 + 0.1) / 6.
    assert [row[f"bin{k}_count"] for k in range(5)] == [2, 1, 1, 1, 1]
    assert [row[f"bin{k}_correct_sum"] for k in range(5)] == [1, 0, 1, 1, 1]
    assert row["bin0_conf_sum"] == pytest.approx(0.9)
    assert row["ece"] == pytest.approx(1.3 / 6)
    # Brier: sum over classes of squared errors, mean over pixels
    per_pixel = [0.09 + 0.04 + 0.01, 0.01 + 0.04 + 0.01, 0.04 + 0.25 + 0.09, 0.0025 + 0.0025 + 0.01,
                 0.09 + 0.16 + 0.49, 0.36 + 0.01 + 0.49]
    assert row["brier"] == pytest.approx(sum(per_pixel) / 6)
    assert multiclass_brier(PROB, LABEL) == row["brier"]


def test_a_class_absent_from_truth_and_prediction_scores_one_like_binary_empty_foreground():
    prob = np.zeros((3, 2, 2))
    prob[0], label = 1.0, np.zeros((2, 2), int)
    prob[0, 0, 0], prob[1, 0, 0], label[0, 0] = 0.0, 1.0, 1
    one, two = class_metrics(prob, label)
    assert (one["dice"], two["dice"], two["iou"]) == (1.0, 1.0, 1.0)
    assert image_metrics(prob, label)["dice"] == 1.0


def test_a_non_finite_probability_makes_the_multiclass_metrics_nan():
    prob = PROB.copy()
    prob[1, 0, 0] = np.nan
    row = image_metrics(prob, LABEL)
    assert all(np.isnan(row[k]) for k in ("iou", "dice", "mean_dice_2class", "ece", "brier"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_label_calibration_of_two_classes_is_todays_binary_calibration(seed):
    """C = 2: the top-label path on [1 - p, p] gives the binary bins and ECE exactly (ties at
    p = 0.5 included: both predict foreground)."""
    rng = np.random.default_rng(seed)
    p = rng.random((17, 19))
    p[0, :5] = [0.5, 0.6, 0.7, 0.0, 1.0]  # ties and bin edges
    label = rng.random((17, 19)) < 0.4
    binary = reliability_bins(p, label)
    top = top_label_bins(np.stack([1.0 - p, p]), label.astype(np.uint8))
    for part in ("count", "conf_sum", "correct_sum"):
        np.testing.assert_array_equal(top[part], binary[part])
    assert ece_from_bins(**top) == ece_from_bins(**binary)


def test_binary_image_rows_are_todays():
    """A fixed binary probability map gives the row the binary code gave before multi-class
    (values computed by hand: TP 2, FP 1, FN 1, TN 2 at the 0.5 threshold)."""
    prob = np.array([[0.9, 0.6, 0.2], [0.5, 0.1, 0.4]])
    label = np.array([[1, 0, 0], [1, 0, 1]], dtype=np.uint8)
    row = image_metrics(prob, label)
    assert (row["fg_pixels"], row["tp"], row["fp"], row["fn"], row["tn"]) == (3, 2, 1, 1, 2)
    assert (row["iou"], row["dice"]) == pytest.approx((2 / 4, 4 / 6))
    assert row["mean_dice_2class"] == pytest.approx((4 / 6 + 4 / 6) / 2)
    # confidences max(p, 1 - p): bin 0 {0.5 ok}, bin 1 {0.6 wrong, 0.6 wrong}, bin 3 {0.8 ok}, bin 4 {0.9, 0.9 ok}
    assert [row[f"bin{k}_count"] for k in range(5)] == [1, 2, 0, 1, 2]
    assert row["ece"] == pytest.approx((0.5 + 1.2 + 0.2 + 0.2) / 6)
    assert row["brier"] == pytest.approx((0.01 + 0.36 + 0.04 + 0.25 + 0.01 + 0.36) / 6)
    assert "class_index" not in row


def test_class_rows_follow_the_schema():
    ident = dict(zip(IDENTITY, [2, "s", "t1", "sup1", "unet", 0.0, 5, 0, 0, 0, 0, "fp"], strict=True))
    records = image_class_records([("case_a", 3, "full")], PROB[None], LABEL[None], ("RV", "LV"))
    frame = class_rows(ident, records)
    assert frame is not None and list(frame.columns) == list(table_columns("classes"))
    assert frame["class_name"].tolist() == ["RV", "LV"] and frame["class_index"].tolist() == [1, 2]
    assert frame["level"].eq("image").all() and frame["hd95_mm"].isna().all()
    assert frame["dice"].tolist() == pytest.approx([4 / 5, 1 / 2])
    assert class_rows(ident, []) is None
