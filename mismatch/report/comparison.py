"""Per-case comparisons: intervals for Table I/II, paired case tests, verdicts and rank stability.

Everything here starts from per-case values (:mod:`mismatch.report.cases`) reduced to one value
per (fold, test case) of a column: the mean over that fold's seeds and label draws. Intervals
resample cases within folds; the paired Wilcoxon test takes each case once, as its mean over
the folds that test it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mismatch.report import uncertainty as unc
from mismatch.report.cases import units
from mismatch.report.design import Column, Design
from mismatch.report.stats import holm, wilcoxon_paired
from mismatch.report.table import Cell, Table, fmt_num, fmt_p, fmt_small
from mismatch.report.tables import SCALE

HEADER = ["baseline", "cases", "mean (ref)", "mean (baseline)", "\u0394", "95% CI of \u0394", "W",
          "Wilcoxon p", "p (Holm)", "verdict"]


Units = dict[tuple[str, int], pd.DataFrame]
"""(column key, axis value) -> that column's (fold, case_id, value) rows."""


def all_units(cases: pd.DataFrame, trials: pd.DataFrame, design: Design) -> Units:
    """Every main-table column's per-case units at every axis value, computed once for the report."""
    narrow = trials[["method", "model", "alpha_key", design.axis, "status"]]  # selections stay cheap
    return {(col.key, value): units(cases, narrow, design, col, value)
            for value in design.axis_values for col in design.columns}


def cell_intervals(unit_map: Units, design: Design, n_resamples: int = unc.RESAMPLES,
                   seed: int = unc.SEED) -> pd.DataFrame:
    """One row per axis value x main-table column: the per-case estimate and its 95% interval."""
    rows = []
    for value in design.axis_values:
        for col in design.columns:
            u = unit_map[(col.key, value)]
            ci = unc.stratified_interval(u["value"], u["fold"], n_resamples=n_resamples, seed=seed)
            rows.append({design.axis: value, "column": col.key, "case_estimate": ci.estimate,
                         "ci_low": ci.low, "ci_high": ci.high, "case_units": ci.n})
    return pd.DataFrame(rows)


def _one(unit_map: Units, design: Design, value: int, col: Column, n_resamples: int, seed: int) -> dict[str, object]:
    ref = design.reference
    pairs = unc.paired_frame(unit_map[(ref.key, value)], unit_map[(col.key, value)])
    ci = unc.stratified_interval(pairs["diff"], pairs["fold"], n_resamples=n_resamples, seed=seed)
    by_case = unc.per_case(pairs)
    test = wilcoxon_paired(by_case["ref"].to_numpy(), by_case["base"].to_numpy(), "two-sided")
    return {design.axis: value, "reference": ref.key, "baseline": col.key, "cases": len(by_case),
            "fold_case_units": len(pairs), "mean_ref": by_case["ref"].mean(), "mean_baseline": by_case["base"].mean(),
            "diff": ci.estimate, "diff_ci_low": ci.low, "diff_ci_high": ci.high, "W": test.statistic,
            "wilcoxon_p": test.pvalue, "wilcoxon_method": test.method,
            "min_p": unc.min_p_wilcoxon(len(by_case), "two-sided", test.method or "auto")}


def comparison_rows(unit_map: Units, design: Design, n_resamples: int = unc.RESAMPLES,
                    seed: int = unc.SEED) -> pd.DataFrame:
    """Reference minus each baseline at every axis value: interval, paired case test, Holm, verdict.

    Holm's family is the baselines compared at one axis value.
    """
    if design.reference is None:
        return pd.DataFrame()
    rows = [_one(unit_map, design, value, col, n_resamples, seed)
            for value in design.axis_values for col in design.columns if col != design.reference]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["wilcoxon_p_holm"] = frame.groupby(design.axis)["wilcoxon_p"].transform(lambda p: holm(p.to_numpy()))
    frame["verdict"] = [unc.verdict(p, lo, hi) for p, lo, hi in
                        zip(frame["wilcoxon_p_holm"], frame["diff_ci_low"], frame["diff_ci_high"], strict=True)]
    return frame


def _ci_text(low: float, high: float, scale: float = SCALE) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "\u2014"
    return f"[{fmt_num(low, scale)}, {fmt_num(high, scale)}]"


def _display(row: pd.Series) -> list[Cell]:
    clear = row["verdict"] != unc.SAME
    return [Cell(f"{row['baseline']}"), Cell(str(row["cases"])), Cell(fmt_num(row["mean_ref"], SCALE)),
            Cell(fmt_num(row["mean_baseline"], SCALE)), Cell(fmt_num(row["diff"], SCALE)),
            Cell(_ci_text(row["diff_ci_low"], row["diff_ci_high"])), Cell(fmt_num(row["W"], 1, 1)),
            Cell(fmt_p(row["wilcoxon_p"])), Cell(fmt_p(row["wilcoxon_p_holm"]), bold=clear),
            Cell(f"{row['reference']} {row['verdict']}" if clear else row["verdict"], bold=clear)]


def reachable_note(frame: pd.DataFrame, axis: str) -> str:
    """The smallest p-value each case count allows, and after Holm over the family."""
    parts = []
    m = int(frame.groupby(axis).size().max()) if len(frame) else 0
    for n, p in sorted(frame.groupby("cases")["min_p"].first().items()):
        holm_min = min(1.0, m * p) if np.isfinite(p) else float("nan")
        parts.append(f"{n} cases: {fmt_small(p)} (after Holm over {m} baselines: {fmt_small(holm_min)})")
    return ("Smallest p-value this design can reach (every case favouring one method; two-sided, computed "
            "with the same test): " + ("; ".join(parts) if parts else "none (fewer than two cases)") + ".")


def comparison_table(frame: pd.DataFrame, design: Design, source: str, metric_label: str) -> Table:
    """The per-case comparison table: one block of rows per axis value."""
    ref = design.reference.key
    header = [design.axis_label] + [h.replace("ref", ref) for h in HEADER]
    rows = [[Cell(str(r[design.axis]))] + _display(r) for _, r in frame.iterrows()]
    title = f"{ref} against each baseline, per test case: {metric_label} (%), 95% CI and verdict"
    notes = [
        f"Per-case values from the {source}. A case's value in a column is its mean over that fold's seeds "
        "and label draws (folds x label draws x seeds are aggregated in that order).",
        f"\u0394 = {ref} minus baseline: mean over folds of the mean per-case difference within the fold. 95% CI: "
        f"percentile bootstrap ({unc.RESAMPLES} resamples, seed {unc.SEED}, scipy.stats.bootstrap) that "
        "resamples test cases within each fold (a stratified bootstrap), keeping each case's pair together.",
        f"Wilcoxon signed-rank test (scipy.stats.wilcoxon, two-sided) on {ref} minus baseline, paired by test "
        "case: a case that is a test case in several folds is one unit, paired on its mean over those folds "
        "(and seeds and label draws), never on (fold, case) rows. Holm-Bonferroni over the baselines at each "
        f"{design.axis_label} value.",
        f"Verdict: '{unc.BETTER}' or '{unc.WORSE}' only when the Holm-adjusted p < {unc.SIGNIFICANCE} AND the "
        f"95% CI of \u0394 excludes 0 on the same side; otherwise '{unc.SAME}'.",
        reachable_note(frame, design.axis),
    ]
    return Table("table3_cases", title, header, rows, frame, notes)


def summary_lines(frame: pd.DataFrame, design: Design, at: int) -> list[str]:
    """One plain-words line per baseline at ``at`` (the report's top summary)."""
    sel = frame[frame[design.axis] == at] if len(frame) else frame
    lines = []
    for _, r in sel.iterrows():
        ci = _ci_text(r["diff_ci_low"], r["diff_ci_high"])
        lines.append(f"{r['reference']} vs {r['baseline']}: {r['verdict']} (\u0394 = {fmt_num(r['diff'], SCALE)} "
                     f"points, 95% CI {ci}; Holm-adjusted Wilcoxon p = {fmt_p(r['wilcoxon_p_holm'])} "
                     f"on {r['cases']} cases)")
    return lines


def rank_units(unit_map: Units, design: Design, value: int) -> dict[str, pd.DataFrame]:
    """Per main-table column, its (fold, case) units at ``value`` (columns without any left out)."""
    out = {col.key: unit_map[(col.key, value)] for col in design.columns}
    return {k: v for k, v in out.items() if len(v)}
