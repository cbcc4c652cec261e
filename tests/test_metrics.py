"""Metric values against hand-computed cases."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mismatch import results as metrics
from mismatch.results import rows


def _case():
    # 2x4 image: truth has 3 foreground pixels; prediction hits 2, misses 1, adds 1 false positive.
    label = np.array([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=np.uint8)
    prob = np.array([[0.95, 0.65, 0.15, 0.75], [0.05, 0.35, 0.0, 0.55]], dtype=np.float32)
    return prob, label


def test_confusion_counts_and_overlaps():
    prob, label = _case()
    # p >= 0.5 is foreground: predicted = {0.95, 0.65, 0.75, 0.55} -> TP 2, FP 2, FN 1.
    c = metrics.confusion(prob, label)
    assert c == {"tp": 2, "fp": 2, "fn": 1, "tn": 3}
    iou, dice = metrics.iou_dice(2, 2, 1)
    assert iou == pytest.approx(2 / 5)
    assert dice == pytest.approx(4 / 7)
    # background Dice: 2*3 / (2*3 + 1 + 2) = 6/9
    assert metrics.mean_dice_2class(**c) == pytest.approx((4 / 7 + 6 / 9) / 2)


def test_iou_is_not_the_two_class_mean_dice():
    prob, label = _case()
    row = metrics.image_metrics(prob, label)
    assert row["iou"] < row["dice"] < row["mean_dice_2class"]


def test_reliability_bins_and_ece_by_hand():
    prob, label = _case()
    # confidences max(p, 1-p): .95  .65  .85  .75  .95  .65  1.0  .55
    # correct?                  y    y    n    n    y    y    y    n
    b = metrics.reliability_bins(prob, label)
    # bins [.5,.6) [.6,.7) [.7,.8) [.8,.9) [.9,1.]
    assert b["count"].tolist() == [1, 2, 1, 1, 3]
    assert b["correct_sum"].tolist() == [0, 2, 0, 0, 3]
    np.testing.assert_allclose(b["conf_sum"], [0.55, 1.3, 0.75, 0.85, 2.9], rtol=1e-6)
    expected = (0.55 + 0.7 + 0.75 + 0.85 + 0.1) / 8
    assert metrics.ece_from_bins(b["count"], b["conf_sum"], b["correct_sum"]) == pytest.approx(expected, rel=1e-6)


def test_bins_aggregate_exactly_over_images():
    rng = np.random.default_rng(0)
    probs = rng.random((3, 8, 8))
    labels = (rng.random((3, 8, 8)) > 0.7).astype(np.uint8)
    per_image = [metrics.reliability_bins(p, y) for p, y in zip(probs, labels)]
    whole = metrics.reliability_bins(probs, labels)
    for key in ("count", "conf_sum", "correct_sum"):
        np.testing.assert_allclose(sum(b[key] for b in per_image), whole[key])


def test_brier():
    prob, label = _case()
    expected = np.mean((prob.astype(np.float64) - label) ** 2)
    assert metrics.brier(prob, label) == pytest.approx(expected)


def test_perfect_and_empty_conventions():
    label = np.zeros((4, 4), np.uint8)
    empty = metrics.image_metrics(np.zeros((4, 4)), label)
    assert (empty["iou"], empty["dice"], empty["mean_dice_2class"]) == (1.0, 1.0, 1.0)
    assert empty["ece"] == pytest.approx(0.0)
    wrong = metrics.image_metrics(np.eye(4), label)
    assert (wrong["iou"], wrong["dice"]) == (0.0, 0.0)
    assert wrong["fg_pixels"] == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        metrics.image_metrics(np.zeros((4, 4)), np.zeros((4, 5)))


def test_bin_edges_are_left_closed():
    # Exactly 0.6 belongs to bin 1 ([0.6, 0.7)); exactly 1.0 to the last bin; 0.5 to bin 0.
    prob = np.array([0.6, 0.4, 1.0, 0.0, 0.5])
    b = metrics.reliability_bins(prob, np.zeros(5, np.uint8))
    assert b["count"].tolist() == [1, 2, 0, 0, 2]


def test_ece_of_an_empty_set_is_nan_everywhere():
    empty = np.zeros(metrics.N_BINS)
    assert np.isnan(metrics.ece_from_bins(empty, empty, empty))
    acc, conf, count, ece = metrics.pooled_calibration(pd.DataFrame(columns=metrics.bin_columns()))
    assert np.isnan(ece) and np.isnan(acc).all() and np.isnan(conf).all() and count.sum() == 0


def test_pooled_bins_of_rows_equal_the_bins_of_all_their_pixels():
    rng = np.random.default_rng(1)
    probs = rng.random((4, 6, 6))
    labels = (rng.random((4, 6, 6)) > 0.6).astype(np.uint8)
    rows = pd.DataFrame([metrics.image_metrics(p, y) for p, y in zip(probs, labels)])
    whole = metrics.reliability_bins(probs, labels)
    acc, conf, count, ece = metrics.pooled_calibration(rows)
    np.testing.assert_array_equal(count, whole["count"])
    assert ece == pytest.approx(metrics.ece_from_bins(whole["count"], whole["conf_sum"], whole["correct_sum"]))
    np.testing.assert_allclose(acc, whole["correct_sum"] / whole["count"])


def test_image_metric_columns_are_the_schemas_in_order():
    prob, label = _case()
    assert list(metrics.image_metrics(prob, label)) == [*metrics.IMAGE_METRICS, *metrics.bin_columns()]
    assert metrics.bin_columns()[:4] == ["bin0_count", "bin0_conf_sum", "bin0_correct_sum", "bin1_count"]
    assert metrics.bin_columns("count", n_bins=2) == ["bin0_count", "bin1_count"]
    np.testing.assert_allclose(metrics.bin_centres(), [0.55, 0.65, 0.75, 0.85, 0.95])


def test_decoder_row_from_test_set_sums():
    prob, label = _case()
    bins = metrics.reliability_bins(prob, label)
    totals = {**bins, "fg_prob_sum": 1.75, "fg_pixels": 3}
    ident = rows.identity(study="s", trial_id="t", method="m", model="mm", alpha=0.1, labelled_slices=2,
                          unlabelled_slices=4, fold=0, seed=1, dataset_fingerprint="f")
    row = rows.decoder_row(ident, 1, "nasb", totals)
    assert list(row) == [*metrics.IDENTITY, "decoder", "decoder_name", "ece", "mean_fg_prob", *metrics.bin_columns()]
    assert row["ece"] == pytest.approx((0.55 + 0.7 + 0.75 + 0.85 + 0.1) / 8, rel=1e-6)
    assert row["mean_fg_prob"] == pytest.approx(1.75 / 3) and row["bin4_count"] == 3
    assert np.isnan(rows.decoder_row(ident, 0, "pasb", {**totals, "fg_pixels": 0})["mean_fg_prob"])
    assert rows.decoder_rows(ident, ["plain"], None) is None


def test_no_module_outside_the_results_package_spells_bin_columns():
    """The bin columns are named by mismatch.results.bin_columns() alone."""
    package = Path(metrics.__file__).resolve().parent
    spelled = re.compile(r"bin\{k\}_|[\"']bin\d_(count|conf_sum|correct_sum)")
    offenders = [str(p.relative_to(package.parent)) for p in package.parent.rglob("*.py")
                 if package not in p.parents and spelled.search(p.read_text())]
    assert offenders == []
