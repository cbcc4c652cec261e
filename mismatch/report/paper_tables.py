"""The paper's tables from per-trial rows: Tables I/II, III (p-values), IV (alpha), decoder ablation.

Every cell is mean +- sample std (ddof=1) over replicates (folds or seeds) of the per-replicate
mean metric, where a replicate's value is the mean over its completed trials of the trial's
mean over test images. Cells with fewer replicates than the study has say so (``7/10``).
Metric values are shown in percent, as in the paper.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mismatch.report.design import Column, Design
from mismatch.report.stats import mean_std
from mismatch.report.table_format import Cell, Table, fmt_num

SCALE = 100.0  # metrics are shown in percent
MS = 1000.0  # times are shown in milliseconds


def replicate_means(trials: pd.DataFrame, design: Design, column: Column, value: int) -> pd.Series:
    """Per-replicate mean of the trials' values (index: replicate), completed trials only."""
    sel = design.column_trials(trials, column, value)
    sel = sel[sel["status"] == "completed"]
    return sel.groupby(design.replicate)["value"].mean()


def summary_cells(trials: pd.DataFrame, design: Design, columns: list[Column], values: list[int]) -> pd.DataFrame:
    """Tidy cells (one row per axis value x column) with mean, std, n, expected and provenance."""
    rows = []
    for value in values:
        for col in columns:
            means = replicate_means(trials, design, col, value)
            sel = design.column_trials(trials, col, value)
            mean, std, n = mean_std(means.to_numpy())
            rows.append({
                design.axis: value, "column": col.key, "method": col.method, "model": col.model,
                "alpha": col.alpha_key, "mean": mean, "std": std, "n": n,
                "expected": len(design.replicates),
                "missing_replicates": " ".join(str(r) for r in design.replicates if r not in means.index),
                "failed_trials": " ".join(sel.index[sel["status"] == "failed"]),
                "per_replicate": " ".join(f"{r}:{v:.6g}" for r, v in means.items()),
            })
    cells = pd.DataFrame(rows)
    if len(cells):
        best = cells.groupby(design.axis)["mean"].transform("max")
        cells["best"] = cells["mean"].notna() & (cells["mean"] == best)
    return cells


def _cell(row: pd.Series) -> Cell:
    if row["n"] == 0:
        return Cell(f"\u2014 (0/{row['expected']})", missing=True)
    text = fmt_num(row["mean"], SCALE)
    if row["n"] > 1:
        text += " \u00b1 " + fmt_num(row["std"], SCALE)
    incomplete = row["n"] < row["expected"]
    if incomplete:
        text += f" ({row['n']}/{row['expected']})"
    low, high = row.get("ci_low", np.nan), row.get("ci_high", np.nan)
    if np.isfinite(low) and np.isfinite(high):
        # The interval belongs to the two-level (runs x cases) estimate, not to the per-image mean
        # before it: show both, so no interval sits beside a number it was not computed for.
        estimate = row.get("case_estimate", np.nan)
        case = f"2-level {fmt_num(estimate, SCALE)}\n" if np.isfinite(estimate) else ""
        text += f"\n{case}[{fmt_num(low, SCALE)}, {fmt_num(high, SCALE)}]"
    return Cell(text, bold=bool(row["best"]), missing=incomplete)


def summary_table(cells: pd.DataFrame, design: Design, columns: list[Column], name: str, title: str) -> Table:
    """Rows = axis values, columns = ``columns``; the best mean of each row in bold."""
    rows = []
    for value, group in cells.groupby(design.axis, sort=True):
        by_key = group.set_index("column")
        rows.append([Cell(str(value))] + [_cell(by_key.loc[c.key]) for c in columns])
    return Table(name, title, [design.axis_label] + [c.key for c in columns], rows, cells)


def cost_rows(trials: pd.DataFrame, columns: list[Column]) -> tuple[list[list[Cell]], pd.DataFrame]:
    """Parameter count (millions) and median inference time per image (ms) of each column."""
    params, times = [], []
    for col in columns:
        sel = col.select(trials)
        sel = sel[sel["status"] == "completed"]
        params.append(float(sel["params"].median()) if "params" in sel and len(sel) else np.nan)
        times.append(float(sel["infer_time_per_image_s"].median())
                     if "infer_time_per_image_s" in sel and len(sel) else np.nan)
    rows = [[Cell("Param. (M)")] + [Cell(fmt_num(p, 1e-6)) for p in params],
            [Cell("Infer. time (ms)")] + [Cell(fmt_num(t, MS, 1)) for t in times]]
    data = pd.DataFrame({"column": [c.key for c in columns], "params": params, "infer_time_per_image_s": times})
    return rows, data


def protocol_label(trials: pd.DataFrame) -> str:
    """The stream protocol and budget of the trials, for captions: e.g. ``stream: two-stream``,
    ``stream: streaming, budget: paper``, or ``mixed`` when the trials differ."""
    if "stream" not in trials:
        return "stream: streaming, budget: paper"  # rows written before the setting existed
    protocols = {(str(s), str(b)) for s, b in zip(trials["stream"].fillna("streaming"),
                                                    trials["budget"].fillna("paper"))}
    if len(protocols) != 1:
        return "stream protocol: mixed (" + "; ".join(f"{s}/{b}" for s, b in sorted(protocols)) + ")"
    stream, budget = protocols.pop()
    return f"stream: {stream}" if stream == "two-stream" else f"stream: {stream}, budget: {budget}"


def main_table(trials: pd.DataFrame, design: Design, metric_label: str,
               intervals: pd.DataFrame | None = None, interval_note: str = "") -> Table:
    """Table I/II: axis values x methods, with parameter and inference-time rows.

    ``intervals`` (from :func:`mismatch.report.comparison.cell_intervals`): per axis value and
    column, ``ci_low``/``ci_high`` shown as ``[low, high]`` after the cell and kept in the data.
    """
    columns = list(design.columns)
    cells = summary_cells(trials, design, columns, list(design.axis_values))
    if intervals is not None and len(intervals) and len(cells):
        cells = cells.merge(intervals, on=[design.axis, "column"], how="left")
    title = (f"Methods compared: {metric_label} (%), mean \u00b1 std over {design.replicate}s "
             f"[{protocol_label(trials)}]")
    table = summary_table(cells, design, columns, "table1_main", title)
    extra, cost = cost_rows(trials, columns)
    table.rows += extra
    table.data = cells.merge(cost, on="column", how="left")
    table.notes = [
        f"Each cell: mean \u00b1 sample std (ddof=1) over {design.replicate}s of the per-{design.replicate} "
        f"mean {metric_label} over test images; bold: best mean of the row; (k/n): only k of the "
        f"study's n {design.replicate}s completed.",
        "Param. (M) and Infer. time (ms): medians over the column's completed trials "
        "(inference time: one forward pass on one test image).",
    ]
    if interval_note:
        table.notes.append(interval_note)
    broadcast = [c.key for c in columns if c.broadcast]
    if broadcast:
        table.notes.append(f"{', '.join(broadcast)}: trained without unlabelled data; the same value "
                           "is shown in every row (as in the paper's Table II).")
    return table


def default_at(trials: pd.DataFrame, design: Design) -> int:
    """The largest axis value where the reference has completed trials (the paper used 100)."""
    if design.reference is None:
        return design.axis_values[-1]
    sel = design.column_trials(trials, design.reference)
    sel = sel[sel["status"] == "completed"]
    return int(sel[design.axis].max()) if len(sel) else design.axis_values[-1]
