"""The report's tuning section: the red leakage warning and the per-method ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mismatch.report import build_report
from mismatch.report.tuning import LEAK_STYLE, leaks, ledger, table_test_cases
from tests.synthetic_study import SyntheticGrid, write_synthetic_study

SPLITS = {"labelled": ["c0"], "unlabelled": ["c1"], "validation": ["c2"], "test": ["c3", "c4"]}


def _best(validation: list[str]) -> dict:
    return {"methods": {
        "mismatch": {"params": {"alpha": 0.003}, "trials": 4, "train_time_s": 7200.0, "validation_cases": validation},
        "sup1": {"params": {"train.lr": 1e-4}, "trials": 4, "train_time_s": 1800.0, "validation_cases": validation},
    }}


def test_a_validation_case_that_is_a_test_case_is_a_leak():
    rows = pd.DataFrame({"splits_json": [json.dumps(SPLITS), json.dumps({**SPLITS, "test": ["c2", "c5"]})]})
    tested = table_test_cases(rows)
    assert tested == {"c2", "c3", "c4", "c5"}
    found = leaks({"tuning": _best(["c2", "c9"])}, tested)
    assert [(f.search, f.method, f.cases) for f in found] == [("tuning", "mismatch", ("c2",)), ("tuning", "sup1", ("c2",))]
    assert leaks({"tuning": _best(["c9"])}, tested) == []
    # a `search alpha` best.json (no per-method entries) is checked by its top-level cases
    assert leaks({"old": {"param": "alpha", "value": 0.002, "validation_cases": ["c3"]}}, tested)[0].cases == ("c3",)


def test_ledger_sums_tuning_and_training_time_per_method():
    trials = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "method": ["mismatch", "mismatch", "sup1", "sup1"],
                           "status": ["completed", "completed", "completed", "failed"],
                           "train_time_s": [3600.0, 1800.0, 900.0, None]})
    frame = ledger(trials, {"tuning": _best(["c9"])}).set_index("method")
    assert frame.loc["mismatch", "tuning_trials"] == 4 and frame.loc["mismatch", "tuning_device_hours"] == 2.0
    assert frame.loc["mismatch", "training_trials"] == 2 and frame.loc["mismatch", "training_device_hours"] == 1.5
    assert frame.loc["sup1", "training_trials"] == 1 and frame.loc["sup1", "total_device_hours"] == 0.75
    untuned = ledger(trials, {}).set_index("method")
    assert (untuned["tuning_trials"] == 0).all() and untuned.loc["mismatch", "total_device_hours"] == 1.5


def test_ledger_counts_the_epochs_of_pruned_search_runs():
    best = {"methods": {"mismatch": {"params": {}, "trials": 5, "train_time_s": 3600.0, "trial_epochs": 31,
                                     "pruned_trials": 3},
                        "sup1": {"params": {}, "trials": 2, "train_time_s": 360.0, "trial_epochs": 18}}}
    frame = ledger(None, {"tuning": best, "again": best}).set_index("method")
    assert frame.loc["mismatch", "tuning_trial_epochs"] == 62 and frame.loc["mismatch", "tuning_pruned_trials"] == 6
    assert frame.loc["sup1", "tuning_pruned_trials"] == 0 and frame.loc["sup1", "tuning_device_hours"] == 0.2


def _study(tmp_path: Path) -> Path:
    grid = SyntheticGrid((("sup1", "unet", float("nan")), ("mismatch", "mm", 0.002)), counts=(5,),
                         replicates=(0, 1), images_per_trial=4, study="tuned-table")
    return write_synthetic_study(tmp_path / "store", grid, predictions=False)


def _add_splits(base: Path) -> None:
    for path in sorted((base / "trials").glob("*.parquet")):
        row = pd.read_parquet(path)
        row["splits_json"] = json.dumps(SPLITS)
        row.to_parquet(path, index=False)


def test_report_warns_in_red_when_a_tuned_value_saw_a_test_case(tmp_path):
    base = _study(tmp_path)
    _add_splits(base)
    (base / "tuning.json").write_text(json.dumps({"tuning": _best(["c3"])}))
    html = build_report(base, tmp_path / "out").read_text()
    assert "Tuning: leakage check and ledger" in html
    assert LEAK_STYLE in html and "sup1 (search tuning): c3" in html
    ledger_csv = pd.read_csv(tmp_path / "out" / "tables" / "tuning_ledger.csv").set_index("method")
    assert ledger_csv.loc["mismatch", "tuning_trials"] == 4


def test_report_is_quiet_when_tuning_cases_were_held_out(tmp_path):
    base = _study(tmp_path)
    _add_splits(base)
    (base / "tuning.json").write_text(json.dumps({"tuning": _best(["c7"])}))
    html = build_report(base, tmp_path / "out").read_text()
    assert LEAK_STYLE not in html and "no tuned value was chosen on a test case" in html
