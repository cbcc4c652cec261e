"""The report's per-class table: each class's Dice and their mean per method for a study with
a classes/ table (hand-computed values), and nothing new for binary studies or old stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mismatch.report import aggregate, build_report
from mismatch.report.cases import SOURCE_CLASS_MEANS, case_values
from mismatch.report.load import load_study
from mismatch.results import table_columns
from tests.synthetic_study import SyntheticGrid, write_synthetic_study

NAMES = ("RV", "Myo", "LV")


def _class_frame(trial: pd.Series, dice: tuple[float, float, float], level: str) -> pd.DataFrame:
    """Two test cases (or images) per trial, each with the same per-class Dice."""
    rows = []
    for case in ("case_0", "case_1"):
        for k, (name, d) in enumerate(zip(NAMES, dice), 1):
            rows.append({**{c: trial[c] for c in table_columns("classes") if c in trial.index},
                         "level": level, "case_id": case, "slice_index": -1 if level == "case" else 0,
                         "patch": "case" if level == "case" else "full", "class_index": k, "class_name": name,
                         "fg_pixels": 10, "tp": 5, "fp": 1, "fn": 1, "tn": 90, "iou": d / (2 - d), "dice": d,
                         "mean_dice_2class": d, "hd95_mm": np.nan, "assd_mm": np.nan, "nsd": np.nan})
    return pd.DataFrame(rows)[list(table_columns("classes"))]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    grid = SyntheticGrid((("sup1", "unet", float("nan")), ("mismatch", "mm", 0.002)), counts=(5,),
                         replicates=(0, 1), images_per_trial=4, study="acdc-like")
    return write_synthetic_study(tmp_path_factory.mktemp("storage"), grid, predictions=False)


def test_a_multiclass_study_gets_each_class_and_the_mean_per_method(study, tmp_path):
    trials = pd.concat([pd.read_parquet(p) for p in sorted((study / "trials").glob("*.parquet"))])
    folder = study / "classes"
    folder.mkdir()
    for _, trial in trials.iterrows():
        dice = (0.6, 0.7, 0.8) if trial["method"] == "sup1" else (0.8, 0.8, 0.9 + 0.02 * trial["fold"])
        # image rows that a case-level table must not use
        frame = pd.concat([_class_frame(trial, dice, "case"), _class_frame(trial, (0.0, 0.0, 0.0), "image")])
        frame.to_parquet(folder / f"{trial['trial_id']}.parquet", index=False)
    index = build_report(study, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "tables" / "table_classes.csv").set_index("column")
    assert list(table.columns[-4:]) == [*NAMES, "mean"]
    assert table.loc["sup1", list(NAMES)].tolist() == pytest.approx([0.6, 0.7, 0.8])
    assert table.loc["sup1", "mean"] == pytest.approx(0.7)
    mm = [c for c in table.index if c != "sup1"][0]
    assert table.loc[mm, "LV"] == pytest.approx(0.91)  # folds 0 and 1: 0.90 and 0.92
    assert table.loc[mm, "mean"] == pytest.approx((0.8 + 0.8 + 0.91) / 3)
    html = index.read_text()
    assert "Dice per class" in html and "[cases]" in html
    # per-case values from images use the per-image foreground means, never counts summed over classes
    data = load_study(study)
    per_trial = aggregate.per_trial(data, "iou")
    values = case_values(data, data.images, per_trial, "iou", use_cases_table=False)
    assert data.has_class_rows() and values is not None and values.source == SOURCE_CLASS_MEANS


def test_a_binary_study_and_an_old_store_have_no_class_table(study, tmp_path_factory):
    grid = SyntheticGrid((("sup1", "unet", float("nan")),), counts=(5,), replicates=(0, 1), images_per_trial=4,
                         study="binary")
    base = write_synthetic_study(tmp_path_factory.mktemp("binary"), grid, predictions=False)
    data = load_study(base)
    assert data.class_rows() is None and not data.has_class_rows()  # a store without classes/ loads as before
    out = tmp_path_factory.mktemp("binary-report")
    build_report(base, out)
    assert not (out / "tables" / "table_classes.csv").exists()
    assert "Dice per class" not in (out / "index.html").read_text()
