"""Tuning honesty: the leakage check of tuned values and each method's ledger of cost.

A study run writes ``tuning.json`` (the best.json of every search it trains with, see
:func:`mismatch.study.best.record_tuning`) into its folder. The report compares each search's
VALIDATION cases (those that chose the tuned values) with the TEST cases of the table's
trials (their ``splits_json``): a shared case means a value was chosen on a test case, and the
report says so in red. The ledger shows per method the tuning trials and the device-hours spent
tuning and training (sums of ``train_time_s`` of the search's and the study's trial rows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mismatch.report.html import Section, esc, paragraph, table_html
from mismatch.report.load import StudyData
from mismatch.report.table_format import Cell, Table

SECONDS_PER_HOUR = 3600.0
#: The leakage warning's style: red, whatever the page's stylesheet (which marks "warn" amber).
LEAK_STYLE = "color: #a50e0e; background: #fde2e1; border: 1px solid #d93025; padding: 6px 10px; border-radius: 4px;"


@dataclass(frozen=True)
class Leak:
    """Cases that chose a tuned value of ``method`` in ``search`` and are test cases of the table."""

    search: str
    method: str
    cases: tuple[str, ...]


def read_tuning(data: StudyData) -> dict[str, Any]:
    """The study folder's ``tuning.json`` (search name -> its best.json), or ``{}``."""
    if data.base is None:
        return {}
    path = f"{data.base}/tuning.json"
    if data.fs.get_file_info(path).type != pafs.FileType.File:
        return {}
    with data.fs.open_input_stream(path) as handle:
        return json.loads(handle.read())


def table_test_cases(rows: pd.DataFrame) -> set[str]:
    """Every test case of the table: the union of the ``test`` lists of the rows' ``splits_json``."""
    cases: set[str] = set()
    for text in rows.get("splits_json", pd.Series(dtype=object)).dropna():
        cases.update(json.loads(text).get("test", []))
    return cases


def leaks(tuning: dict[str, Any], tested: set[str]) -> list[Leak]:
    """Per search and tuned method, the validation cases that are also test cases of the table."""
    found = []
    for search, best in tuning.items():
        methods = best.get("methods") or {"(search alpha)": {"validation_cases": best.get("validation_cases", [])}}
        for method, result in methods.items():
            shared = sorted(set(result.get("validation_cases", [])) & tested)
            if shared:
                found.append(Leak(search, method, tuple(shared)))
    return found


def _split_rows(data: StudyData) -> pd.DataFrame:
    """``method`` and ``splits_json`` of the study's completed trial rows (read here: the report's
    trial frame does not carry the splits)."""
    if data.base is None or data.trials is None:
        return pd.DataFrame(columns=["method", "splits_json"])
    folder = f"{data.base}/trials"
    files = [f.path for f in data.fs.get_file_info(pafs.FileSelector(folder))
             if f.path.endswith(".parquet") and f.path not in data.corrupt]  # already warned about
    frames = []
    for path in files:
        names = set(pq.read_schema(path, filesystem=data.fs).names)
        wanted = [c for c in ("method", "status", "splits_json") if c in names]
        frames.append(pq.read_table(path, filesystem=data.fs, columns=wanted).to_pandas())
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "splits_json"])
    return rows[rows["status"] == "completed"] if "status" in rows else rows


def ledger(trials: pd.DataFrame | None, tuning: dict[str, Any]) -> pd.DataFrame:
    """Per method: tuning trials and device-hours, training trials and device-hours, and the total."""
    tune: dict[str, list[float]] = {}
    for best in tuning.values():
        for method, result in (best.get("methods") or {}).items():
            counts = tune.setdefault(method, [0.0, 0.0, 0.0, 0.0])
            counts[0] += result.get("trials", 0)  # pruned runs included: each trains epochs and costs time
            counts[1] += result.get("train_time_s", 0.0) / SECONDS_PER_HOUR
            counts[2] += result.get("trial_epochs", 0)
            counts[3] += result.get("pruned_trials", 0)
    train = pd.DataFrame(columns=["method", "trials", "hours"])
    if trials is not None and "status" in trials:
        trials = trials[trials["status"] == "completed"]
    if trials is not None and len(trials):
        grouped = trials.assign(method=trials["method"].astype(str)).groupby("method", observed=True)
        train = grouped.agg(trials=("trial_id", "size"), hours=("train_time_s", "sum")).reset_index()
        train["hours"] = train["hours"].fillna(0) / SECONDS_PER_HOUR
    methods = list(dict.fromkeys([*train["method"], *tune]))
    by_method = train.set_index("method")
    rows = []
    for method in methods:
        t_trials, t_hours, t_epochs, t_pruned = tune.get(method, [0, 0.0, 0, 0])
        n = int(by_method.loc[method, "trials"]) if method in by_method.index else 0
        h = float(by_method.loc[method, "hours"]) if method in by_method.index else 0.0
        rows.append({"method": method, "tuning_trials": int(t_trials), "tuning_pruned_trials": int(t_pruned),
                     "tuning_trial_epochs": int(t_epochs), "tuning_device_hours": t_hours,
                     "training_trials": n, "training_device_hours": h, "total_device_hours": t_hours + h})
    return pd.DataFrame(rows, columns=["method", "tuning_trials", "tuning_pruned_trials", "tuning_trial_epochs",
                                       "tuning_device_hours", "training_trials", "training_device_hours",
                                       "total_device_hours"])


def ledger_table(frame: pd.DataFrame, searches: list[str]) -> Table:
    """The ledger as a report table."""
    rows = [[Cell(str(r.method)), Cell(str(r.tuning_trials)), Cell(str(r.tuning_pruned_trials)),
             Cell(str(r.tuning_trial_epochs)), Cell(f"{r.tuning_device_hours:.3f}"),
             Cell(str(r.training_trials)), Cell(f"{r.training_device_hours:.3f}"), Cell(f"{r.total_device_hours:.3f}")]
            for r in frame.itertuples()]
    notes = ["Device-hours: sums of the trials' train_time_s (wall time of each trial on its device; trials "
             "that share a GPU each count their own time).",
             "Tuning counts every training run of the search, pruned ones included (a multi-fidelity search stops "
             "them at a rung: their epochs and time are spent; none of their numbers reaches a table).",
             f"Tuning: {', '.join(searches)}." if searches else "No search fed this study: no method was tuned here."]
    return Table("tuning_ledger", "Ledger: tuning and training cost per method",
                 ["method", "tuning trials", "of them pruned", "tuning trial-epochs", "tuning device-h", "training trials",
                  "training device-h", "total device-h"],
                 rows, frame, notes)


def leak_message(found: list[Leak]) -> str:
    """The red warning's text."""
    parts = [f"{leak.method} (search {leak.search}): {', '.join(leak.cases)}" for leak in found]
    return ("Tuned values were chosen on test cases of this table (the search scored candidates on cases this "
            "table tests on, so its test results are optimistic): " + "; ".join(parts)
            + ". Use a held-out tuning split (protocol.tuning_cases; docs/studies.md).")


def leak_html(found: list[Leak]) -> str:
    """The warning as a red paragraph."""
    return f'<p class="leak" style="{LEAK_STYLE}"><strong>Leakage:</strong> {esc(leak_message(found))}</p>'


def tuning_section(data: StudyData, trials: pd.DataFrame | None) -> tuple[Section, list[Table]]:
    """The section: the leakage warning (red) or check, and the ledger."""
    tuning = read_tuning(data)
    table = ledger_table(ledger(trials, tuning), list(tuning))
    sec = Section("tuning", "Tuning: leakage check and ledger")
    if tuning:
        found = leaks(tuning, table_test_cases(_split_rows(data)))
        sec.body.append(leak_html(found) if found else
                        paragraph("Leakage check: no tuned value was chosen on a test case of this table."))
    sec.body.append(table_html(table))
    return sec, [table]
