"""What is missing and where the numbers come from: incomplete cells, failed trials, provenance.

Nothing is hidden: every trial appears in the per-trial table, failed trials with their full
error, cells with fewer replicates than the study has with the missing ones named.
"""

from __future__ import annotations

import datetime as dt
from importlib import metadata

import pandas as pd

from mismatch.report.design import Design
from mismatch.report.load import StudyData
from mismatch.report.table_format import Cell, Table, fmt_num

_TRIAL_COLUMNS = ["method", "model", "alpha_key", "labelled_slices", "unlabelled_slices", "fold", "seed",
                  "status", "n_images", "value"]


def incomplete_table(cells: pd.DataFrame, design: Design) -> Table:
    """Main-table cells with fewer replicates than the study has."""
    bad = cells[cells["n"] < cells["expected"]] if len(cells) else cells
    header = ["method", design.axis_label, f"{design.replicate}s", f"missing {design.replicate}s", "failed trials"]
    rows = [[Cell(r["column"]), Cell(str(r[design.axis])), Cell(f"{r['n']}/{r['expected']}", missing=True),
             Cell(r["missing_replicates"]), Cell(r["failed_trials"] or "\u2014")] for _, r in bad.iterrows()]
    data = bad[["column", design.axis, "n", "expected", "missing_replicates", "failed_trials"]] if len(bad) else \
        pd.DataFrame(columns=["column", design.axis, "n", "expected", "missing_replicates", "failed_trials"])
    return Table("missing_cells", "Incomplete cells of the main table", header, rows, data)


def failed_table(trials: pd.DataFrame, design: Design) -> Table:
    """Trials that failed, or finished without image rows, with their errors."""
    bad = trials[trials["status"] != "completed"]
    header = ["trial", "status", "method", "model", "alpha", design.axis_label, design.replicate, "error"]
    rows, data = [], []
    for tid, r in bad.iterrows():
        error = r.get("error")
        error = "" if error is None or pd.isna(error) else str(error)
        rows.append([Cell(tid), Cell(r["status"]), Cell(r["method"]), Cell(r["model"]),
                     Cell(r["alpha_key"] or "\u2014"),
                     Cell(str(r[design.axis])), Cell(str(r[design.replicate])), Cell(error or "\u2014")])
        data.append({"trial_id": tid, "status": r["status"], "method": r["method"], "model": r["model"],
                     "alpha": r["alpha_key"], design.axis: r[design.axis], design.replicate: r[design.replicate],
                     "error": error})
    return Table("failed_trials", "Failed trials and trials without image rows", header, rows,
                 pd.DataFrame(data, columns=["trial_id", "status", "method", "model", "alpha", design.axis,
                                             design.replicate, "error"]))


def trials_table(trials: pd.DataFrame, metric: str) -> Table:
    """Every trial with its identity, status and mean metric: the rows behind every cell."""
    frame = trials[[c for c in _TRIAL_COLUMNS if c in trials]].reset_index(names="trial_id")
    frame = frame.rename(columns={"alpha_key": "alpha", "value": f"mean_{metric}"})
    frame = frame.sort_values(["method", "model", "alpha", "labelled_slices", "unlabelled_slices", "fold", "seed"])
    header = list(frame.columns)
    rows = [[Cell(fmt_num(v, 1, 4) if isinstance(v, float) else str(v)) for v in r]
            for r in frame.itertuples(index=False)]
    return Table("trials", "Every trial", header, rows, frame)


def _counts(series: pd.Series) -> str:
    counts = series.value_counts(dropna=True)
    return "; ".join(f"{k} ({v})" for k, v in counts.items()) or "\u2014"


def provenance_table(data: StudyData, trials: pd.DataFrame, design: Design, options: dict[str, object]) -> Table:
    """Key/value facts: source, versions, fingerprints, trial counts, dates, report options."""
    try:
        version = metadata.version("mismatch")
    except metadata.PackageNotFoundError:
        version = "unknown"
    facts: list[tuple[str, str]] = [
        ("source", data.source),
        ("files read", ", ".join(f"{k}: {v}" for k, v in data.files.items())),
        ("per-image rows", f"{len(data.images):,}"),
        ("trials", _counts(trials["status"])),
        ("study", _counts(trials["study"])),
        ("dataset fingerprint", _counts(trials["dataset_fingerprint"])),
        ("count axis / replicate", f"{design.axis} / {design.replicate}"),
    ]
    raw = data.trials
    if raw is not None:
        for col, name in (("code_version", "code version"), ("torch_version", "torch version"), ("device", "device")):
            if col in raw:
                facts.append((name, _counts(raw[col])))
        if "started_at" in raw and raw["started_at"].notna().any():
            facts.append(("trials ran", f"{raw['started_at'].dropna().astype(str).min()} to "
                                        f"{raw['finished_at'].dropna().astype(str).max()}"))
    else:
        facts.append(("trial-level rows", "absent (merged per-image file): no costs, errors or versions"))
    rows = raw if raw is not None else data.images
    if "schema_version" in rows:
        facts.append(("schema version", _counts(rows["schema_version"])))
    if data.uncommitted:
        facts.append(("uncommitted image files (no trials row; not read)", " ".join(data.uncommitted)))
    facts.append(("report", f"mismatch {version}, generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}"))
    facts += [(f"option {k}", str(v)) for k, v in options.items()]
    rows = [[Cell(k), Cell(v)] for k, v in facts]
    return Table("provenance", "Provenance", ["fact", "value"], rows, pd.DataFrame(facts, columns=["fact", "value"]))
