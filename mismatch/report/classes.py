"""Per-class results of multi-class studies: each class's Dice and their mean, per method.

Read from the ``classes/`` table (:meth:`mismatch.report.load.StudyData.class_rows`), which
only tasks with more than one foreground class write; binary studies get no table. Per-case
rows are used when the trials have them (the primary 3D results), else per-image rows.
"""

from __future__ import annotations

import pandas as pd

from mismatch.report.design import Design
from mismatch.report.paper_tables import SCALE
from mismatch.report.table_format import Cell, Table, fmt_num

METRIC = "dice"


def class_means(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Per trial and class: the mean Dice over its test cases (or images), and which level was used."""
    level = "case" if (rows["level"] == "case").any() else "image"
    used = rows[rows["level"] == level]
    means = (used.groupby(["trial_id", "class_index", "class_name"], observed=True)[METRIC].mean()
             .reset_index())
    means["trial_id"] = means["trial_id"].astype(str)
    means["class_name"] = means["class_name"].astype(str)
    return means, level


def class_table(rows: pd.DataFrame | None, trials: pd.DataFrame, design: Design) -> Table | None:
    """Per method and axis value: each foreground class's Dice (%) and their mean, mean over the
    replicates; None without per-class rows or with a single foreground class. ``trials``: one
    row per trial, indexed by ``trial_id`` (:func:`mismatch.report.aggregate.per_trial`)."""
    if rows is None or rows.empty or rows["class_index"].nunique() < 2:
        return None
    means, level = class_means(rows)
    names = means.drop_duplicates("class_index").sort_values("class_index")["class_name"].tolist()
    wide = means.pivot_table(index="trial_id", columns="class_name", values=METRIC)[names]
    wide["mean"] = wide[names].mean(axis=1)
    ids = trials[trials["status"] == "completed"]  # indexed by trial_id (mismatch.report.aggregate.per_trial)
    data, cells = [], []
    for column in design.columns:
        for value in design.axis_values:
            chosen = design.column_trials(ids, column, value)
            values = wide.reindex(chosen.index.astype(str)).dropna(how="all")
            if values.empty:
                continue
            mean = values.mean()
            data.append({"column": column.key, design.axis: value, "trials": len(values), **mean.to_dict()})
            cells.append([Cell(column.key), Cell(str(value)), *(Cell(fmt_num(mean[n], SCALE)) for n in names),
                          Cell(fmt_num(mean["mean"], SCALE), bold=True)])
    if not cells:
        return None
    return Table(
        name="table_classes",
        title=f"Dice per class (%): each foreground class and their mean, per method [{level}s]",
        header=["method", design.axis_label, *names, "mean"],
        rows=cells,
        data=pd.DataFrame(data),
        notes=[f"Each cell: mean over the trials ({design.replicate}s) of the per-trial mean Dice over test "
               f"{level}s; 'mean' is the mean over the foreground classes (the main table's metric for a "
               "multi-class task). A class absent from a test " + level + " and from its prediction scores 1."],
    )
