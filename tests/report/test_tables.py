"""Table cells, design detection and ablations against hand-computed values on tiny fixtures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mismatch.report.ablations import alpha_table, decoder_frame, decoder_variants
from mismatch.report.aggregate import per_trial
from mismatch.report.design import detect_design
from mismatch.report.load import StudyData
from mismatch.report.paper_tables import main_table, summary_cells
from mismatch.report.significance import pvalue_rows

NAN = float("nan")


def _data(images: pd.DataFrame, trials: pd.DataFrame | None = None) -> StudyData:
    import pyarrow.fs as pafs

    return StudyData("memory", images, trials, pafs.LocalFileSystem(), None)


@pytest.fixture()
def hand(make_rows) -> StudyData:  # noqa: ANN001
    """sup1 and mismatch at 5 and 10 labelled slices, 3 folds (mismatch misses fold 2 at 10)."""
    values = {
        ("sup1", "unet", NAN, 5, 0): [0.40, 0.50], ("sup1", "unet", NAN, 5, 1): [0.60],
        ("sup1", "unet", NAN, 5, 2): [0.30, 0.50, 0.70],
        ("sup1", "unet", NAN, 10, 0): [0.55], ("sup1", "unet", NAN, 10, 1): [0.65],
        ("sup1", "unet", NAN, 10, 2): [0.60],
        ("mismatch", "mm", 0.002, 5, 0): [0.70, 0.80], ("mismatch", "mm", 0.002, 5, 1): [0.60],
        ("mismatch", "mm", 0.002, 5, 2): [0.50],
        ("mismatch", "mm", 0.002, 10, 0): [0.90], ("mismatch", "mm", 0.002, 10, 1): [0.70],
        # ablations at 5 only: other alpha, other decoders
        ("mismatch", "mm", 0.0, 5, 0): [0.20], ("mismatch", "mm", 0.0, 5, 1): [0.40],
        ("mismatch", "mm-a", 0.002, 5, 0): [0.10], ("mismatch", "mm-a", 0.002, 5, 1): [0.30],
    }
    return _data(make_rows(values))


def test_main_cells_are_means_of_per_fold_means(hand: StudyData) -> None:
    trials = per_trial(hand, "iou")
    design = detect_design(trials)
    assert (design.axis, design.replicate, design.axis_values) == ("labelled_slices", "fold", (5, 10))
    assert [c.key for c in design.columns] == ["sup1", "mismatch"]  # ablation variants excluded
    cells = summary_cells(trials, design, list(design.columns), [5, 10]).set_index(["labelled_slices", "column"])
    sup1_folds = [np.mean([0.40, 0.50]), 0.60, np.mean([0.30, 0.50, 0.70])]
    assert cells.loc[(5, "sup1"), "mean"] == pytest.approx(np.mean(sup1_folds))
    assert cells.loc[(5, "sup1"), "std"] == pytest.approx(np.std(sup1_folds, ddof=1))
    mm_folds = [0.75, 0.60, 0.50]
    assert cells.loc[(5, "mismatch"), "mean"] == pytest.approx(np.mean(mm_folds))
    assert cells.loc[(10, "mismatch"), ["mean", "n", "expected"]].tolist() == pytest.approx([0.80, 2, 3])
    assert cells.loc[(10, "mismatch"), "missing_replicates"] == "2"
    assert bool(cells.loc[(5, "mismatch"), "best"]) and not bool(cells.loc[(5, "sup1"), "best"])


def test_main_table_display(hand: StudyData) -> None:
    trials = per_trial(hand, "iou")
    table = main_table(trials, detect_design(trials), "foreground IoU")
    row5, row10 = table.rows[0], table.rows[1]
    assert row5[2].text == f"{np.mean([75, 60, 50]):.2f} \u00b1 {np.std([75, 60, 50], ddof=1):.2f}"
    assert row5[2].bold and not row5[1].bold
    assert row10[2].text.endswith("(2/3)") and row10[2].missing
    assert [r[0].text for r in table.rows[2:]] == ["Param. (M)", "Infer. time (ms)"]  # no trials/: dashes
    assert table.rows[2][1].text == "\u2014"


def test_other_metrics_use_their_column(hand: StudyData) -> None:
    trials = per_trial(hand, "dice")
    design = detect_design(trials)
    cells = summary_cells(trials, design, list(design.columns), [10]).set_index("column")
    dice = lambda i: 2 * i / (1 + i)  # noqa: E731
    assert cells.loc["mismatch", "mean"] == pytest.approx(np.mean([dice(0.9), dice(0.7)]))


def test_alpha_and_decoder_ablations(hand: StudyData) -> None:
    trials = per_trial(hand, "iou")
    design = detect_design(trials)
    table = alpha_table(trials, design, "IoU")
    assert table.header == ["labelled slices", "alpha=0", "alpha=0.002"]
    assert table.rows[0][1].text.startswith(f"{np.mean([20, 40]):.2f} \u00b1")
    assert table.rows[0][2].bold
    variants = decoder_variants(trials, design)
    assert list(variants) == [5] and [c.key for c in variants[5]] == ["mm-a", "mm"]
    frame = decoder_frame(trials, design, 5, variants[5])
    assert frame.loc[0, "mm-a"] == pytest.approx(0.10) and frame.loc[1, "mm"] == pytest.approx(0.60)
    assert np.isnan(frame.loc[2, "mm-a"])


def test_pvalue_rows_use_per_fold_means(hand: StudyData) -> None:
    trials = per_trial(hand, "iou")
    design = detect_design(trials)
    rows = pvalue_rows(trials, design, 5, "two-sided", "auto").set_index("baseline")
    from scipy.stats import mannwhitneyu

    ref = mannwhitneyu([0.75, 0.60, 0.50], [0.45, 0.60, 0.50], method="asymptotic")  # ties -> asymptotic
    assert rows.loc["sup1", "mwu_p"] == pytest.approx(ref.pvalue)
    assert rows.loc["sup1", "mwu_method"] == "asymptotic"
    assert rows.loc["sup1", "wilcoxon_pairs"] == 3


def test_brats_like_design_varies_unlabelled_over_seeds(make_rows) -> None:  # noqa: ANN001
    rows = []
    for method, model, alpha, pools in (("sup1", "unet", NAN, [0]), ("mismatch", "mm", 0.002, [3100, 4650, 6200])):
        for pool in pools:
            for seed in range(3):
                part = make_rows({(method, model, alpha, 20, 0): [0.5 + 0.01 * seed + pool / 1e5]})
                part["unlabelled_slices"], part["seed"] = pool, seed
                part["trial_id"] = f"{method}-{pool}-{seed}"
                rows.append(part)
    trials = per_trial(_data(pd.concat(rows, ignore_index=True)), "iou")
    design = detect_design(trials)
    assert (design.axis, design.replicate) == ("unlabelled_slices", "seed")
    assert design.axis_values == (3100, 4650, 6200)
    assert [c.broadcast for c in design.columns] == [True, False]
    table = main_table(trials, design, "IoU")
    assert {r[1].text for r in table.rows[:3]} == {table.rows[0][1].text}  # sup1 repeated in every row
    assert any("trained without unlabelled data" in n for n in table.notes)


def test_failed_trials_and_trials_without_images(hand: StudyData) -> None:
    trials_rows = hand.images.drop_duplicates("trial_id")[["trial_id", "method", "model", "alpha", "labelled_slices",
                                                           "unlabelled_slices", "fold", "seed", "study",
                                                           "dataset_fingerprint"]].copy()
    trials_rows["status"], trials_rows["error"] = "completed", None
    extra = trials_rows.iloc[[0, 0]].copy()
    extra["trial_id"] = ["mismatch-failed", "mismatch-lost"]
    extra[["method", "model", "alpha", "labelled_slices", "fold"]] = ["mismatch", "mm", 0.002, 10, 2]
    extra["status"] = ["failed", "completed"]
    extra["error"] = ["ValueError: boom", None]
    data = _data(hand.images, pd.concat([trials_rows, extra], ignore_index=True))
    trials = per_trial(data, "iou")
    assert trials.loc["mismatch-failed", "status"] == "failed"
    assert trials.loc["mismatch-lost", "status"] == "no-images"
    design = detect_design(trials)
    cells = summary_cells(trials, design, list(design.columns), [10]).set_index("column")
    assert cells.loc["mismatch", "failed_trials"] == "mismatch-failed"
    assert cells.loc["mismatch", "n"] == 2


def test_alpha_0_control_sits_beside_sup2_and_captions_name_the_protocol(make_rows) -> None:
    values = {
        ("sup2", "mm", NAN, 5, 0): [0.40], ("sup2", "mm", NAN, 5, 1): [0.50],
        ("mismatch", "mm", 0.002, 5, 0): [0.70], ("mismatch", "mm", 0.002, 5, 1): [0.60],
        ("mismatch", "mm", 0.0, 5, 0): [0.45], ("mismatch", "mm", 0.0, 5, 1): [0.55],
        ("sup1", "unet", NAN, 5, 0): [0.30], ("sup1", "unet", NAN, 5, 1): [0.35],
    }
    images = make_rows(values)
    trials = per_trial(_data(images), "iou")
    design = detect_design(trials)
    keys = [c.key for c in design.columns]
    assert keys.index("MisMatch, alpha = 0") == keys.index("sup2") + 1
    assert design.reference is not None and design.reference.alpha_key == "0.002"
    table = main_table(trials, design, "foreground IoU")
    control = table.rows[0][table.header.index("MisMatch, alpha = 0")].text
    assert control.startswith(f"{50.0:.2f} \u00b1")  # mean of 0.45 and 0.55
    assert table.title.endswith("[stream: streaming, budget: paper]")  # rows without the columns: the paper's
    from mismatch.report.paper_tables import protocol_label

    frame = pd.DataFrame({"stream": ["two-stream", "two-stream"], "budget": ["paper", "paper"]})
    assert protocol_label(frame) == "stream: two-stream"
    frame.loc[1, ["stream", "budget"]] = ["streaming", "steps"]
    assert protocol_label(frame).startswith("stream protocol: mixed")
    no_sup2 = per_trial(_data(images[images["method"] != "sup2"]), "iou")
    assert "MisMatch, alpha = 0" not in [c.key for c in detect_design(no_sup2).columns]
