"""What the study varied: the count axis, the replicate axis and the columns of the main table.

A CARVE-like study varies ``labelled_slices`` over folds; a BRATS-like one varies
``unlabelled_slices`` over seeds. Both are detected from the trials rather than configured:
the axis is the count that takes several values within one (variant, fold, seed); the
replicate is ``fold`` if folds vary within one (variant, count), else ``seed``.

A *variant* is (method, model, alpha). A method's main-table variants are those covering the
most values of the axis, so ablation variants run at one count only (alpha sweep, MM-a/b/c)
stay out of the main table and appear in the ablations.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# The paper's column order; methods it does not know come before MisMatch, by name.
# The paper's Table I order, then the modern baselines (issue 14), then MisMatch last.
PAPER_ORDER = ("sup1", "sup2", "mta", "mean-teacher", "fixmatch", "cct", "morph", "ua-mt", "cps", "bcp", "unimatch",
               "sup-strong")
REFERENCE_METHOD = "mismatch"
VARIANT = ["method", "model", "alpha_key"]


@dataclass(frozen=True)
class Column:
    """One column of the main table: a variant under a display key.

    ``broadcast`` marks a supervised method in an unlabelled-count study: it was trained
    without unlabelled data (count 0), and its value is shown in every row, as in Table II.
    """

    key: str
    method: str
    model: str
    alpha_key: str
    broadcast: bool = False

    def select(self, trials: pd.DataFrame) -> pd.DataFrame:
        """The trials of this variant."""
        mask = (trials["method"] == self.method) & (trials["model"] == self.model)
        return trials[mask & (trials["alpha_key"] == self.alpha_key)]


@dataclass(frozen=True)
class Design:
    """The study's layout, detected from its trials."""

    axis: str
    replicate: str
    axis_values: tuple[int, ...]
    replicates: tuple[int, ...]
    columns: tuple[Column, ...]
    reference: Column | None

    @property
    def axis_label(self) -> str:
        return "labelled slices" if self.axis == "labelled_slices" else "unlabelled slices"

    def column_trials(self, trials: pd.DataFrame, column: Column, value: int | None = None) -> pd.DataFrame:
        """Trials of ``column`` (at axis ``value`` if given; broadcast columns ignore it)."""
        sel = column.select(trials)
        if value is None or column.broadcast:
            return sel
        return sel[sel[self.axis] == value]


def _mean_nunique(trials: pd.DataFrame, by: list[str], col: str) -> float:
    return float(trials.groupby(by)[col].nunique().mean()) if len(trials) else 0.0


def detect_axis(trials: pd.DataFrame) -> str:
    """``labelled_slices`` or ``unlabelled_slices``: whichever varies within a variant's replicate."""
    by = VARIANT + ["fold", "seed"]
    if _mean_nunique(trials, by, "unlabelled_slices") > _mean_nunique(trials, by, "labelled_slices"):
        return "unlabelled_slices"
    return "labelled_slices"


def detect_replicate(trials: pd.DataFrame, axis: str) -> str:
    """``fold`` if folds vary within one variant and count, else ``seed`` if seeds do."""
    by = VARIANT + [axis]
    folds, seeds = _mean_nunique(trials, by, "fold"), _mean_nunique(trials, by, "seed")
    return "seed" if seeds > 1 and seeds > folds else "fold"


def _order(method: str) -> tuple[int, str]:
    if method in PAPER_ORDER:
        return PAPER_ORDER.index(method), method
    return (len(PAPER_ORDER) + (1 if method == REFERENCE_METHOD else 0), method)


def _key(method: str, variant: pd.Series, group: pd.DataFrame) -> str:
    """``method`` alone, or with the model and/or alpha when the method has several variants."""
    if len(group) == 1:
        return method
    parts = []
    if group["model"].nunique() > 1:
        parts.append(variant["model"])
    if group["alpha_key"].nunique() > 1:
        parts.append(f"alpha={variant['alpha_key'] or 'none'}")
    return f"{method} ({', '.join(parts)})"


def main_columns(trials: pd.DataFrame, axis: str) -> list[Column]:
    """The main table's columns: per method, the variants covering the most axis values."""
    coverage = trials.groupby(VARIANT)[axis].agg(lambda s: frozenset(s)).reset_index(name="values")
    coverage["n"] = coverage["values"].map(len)
    columns = []
    for method in sorted(coverage["method"].unique(), key=_order):
        group = coverage[coverage["method"] == method]
        group = group[group["n"] == group["n"].max()].sort_values(["model", "alpha_key"])
        for _, variant in group.iterrows():
            broadcast = axis == "unlabelled_slices" and variant["values"] == frozenset({0})
            columns.append(Column(_key(method, variant, group), method, variant["model"],
                                  variant["alpha_key"], broadcast))
    return _with_alpha0_control(columns, coverage)


CONTROL_KEY = "MisMatch, alpha = 0"


def _with_alpha0_control(columns: list[Column], coverage: pd.DataFrame) -> list[Column]:
    """``columns`` with MisMatch at alpha = 0 beside Sup2 when the study has both (and another
    MisMatch variant: the reference).

    MisMatch with alpha = 0 trains Sup2's network on the same stream with a zero consistency
    gradient: the control that separates the consistency loss from the extra optimiser steps.
    """
    def is_zero(c: Column) -> bool:
        return c.method == REFERENCE_METHOD and c.alpha_key == "0"

    zero = coverage[(coverage["method"] == REFERENCE_METHOD) & (coverage["alpha_key"] == "0")]
    others = [c for c in columns if c.method == REFERENCE_METHOD and not is_zero(c)]
    if not any(c.method == "sup2" for c in columns) or zero.empty or not others:
        return columns
    variant = zero.sort_values("n", ascending=False).iloc[0]
    control = Column(CONTROL_KEY, REFERENCE_METHOD, variant["model"], "0")
    kept = [c for c in columns if not is_zero(c)]
    at = max(i for i, c in enumerate(kept) if c.method == "sup2") + 1
    return kept[:at] + [control] + kept[at:]


def _reference(columns: list[Column], reference: str) -> Column | None:
    for col in columns:
        if col.key == reference:
            return col
    return next((c for c in columns if c.method == reference and c.key != CONTROL_KEY), None)


def detect_design(trials: pd.DataFrame, reference: str = REFERENCE_METHOD) -> Design:
    """Detect axis, replicate and columns from the per-trial table (all statuses)."""
    if trials.empty:
        raise ValueError("the study has no trials to report on")
    axis = detect_axis(trials)
    replicate = detect_replicate(trials, axis)
    columns = main_columns(trials, axis)
    plain = [c for c in columns if not c.broadcast] or columns
    values = pd.concat([c.select(trials)[axis] for c in plain]).unique()
    return Design(axis=axis, replicate=replicate,
                  axis_values=tuple(sorted(int(v) for v in values)),
                  replicates=tuple(sorted(int(r) for r in trials[replicate].unique())),
                  columns=tuple(columns), reference=_reference(columns, reference))
