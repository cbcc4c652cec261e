"""Comparisons over training runs and test cases: Table I/II intervals, run-level tests, verdicts.

Everything here starts from per-(run, case) values (:mod:`mismatch.report.cases`): a run is one
trained model, identified by (fold, seed, label draw); the runs of two methods with the same key
were trained and tested on the same data split, so they are paired. Two levels of uncertainty
enter every number:

- intervals: a two-level (hierarchical) percentile bootstrap that resamples runs, then test
  cases within each drawn run (:func:`mismatch.stats.hierarchical.hierarchical_interval`);
- tests: an exact paired sign-flip permutation test on the per-run mean differences
  (:func:`mismatch.stats.runlevel.paired_run_test`), Holm across the baselines of one count.

A verdict is "better"/"worse" only when both agree; otherwise "not separated", with the
design's minimum detectable difference (MDD) and the runs the planner says would decide it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mismatch.report import uncertainty as unc
from mismatch.report.cases import RUN_KEYS, units
from mismatch.report.design import Column, Design
from mismatch.report.paper_tables import SCALE
from mismatch.report.table_format import Cell, Table, fmt_num, fmt_p, fmt_small
from mismatch.stats import hierarchical as hier
from mismatch.stats import power as pw
from mismatch.stats import runlevel as rl

HEADER = ["baseline", "runs", "cases", "mean (ref)", "mean (baseline)", "\u0394", "95% CI of \u0394 (runs x cases)",
          "run p", "p (Holm)", "MDD", "verdict"]
POWER = 0.8
MAX_PAIRS = 64
"""The planner's search stops here (pairs of runs): beyond it a gap is called undetectable."""

Units = dict[tuple[str, int], pd.DataFrame]
"""(column key, axis value) -> that column's (fold, seed, label_draw, case_id, value) rows."""


def all_units(cases: pd.DataFrame, trials: pd.DataFrame, design: Design) -> Units:
    """Every main-table column's per-(run, case) units at every axis value, computed once."""
    narrow = trials[["method", "model", "alpha_key", design.axis, "status"]]  # selections stay cheap
    return {(col.key, value): units(cases, narrow, design, col, value)
            for value in design.axis_values for col in design.columns}


def run_labels(frame: pd.DataFrame) -> np.ndarray:
    """One label per row naming its run: ``fold/seed/label_draw``."""
    if frame.empty:  # DataFrame.agg on no rows returns a frame, not a series
        return np.array([], dtype=object)
    return frame[list(RUN_KEYS)].astype(str).agg("/".join, axis=1).to_numpy()


def cell_intervals(unit_map: Units, design: Design, n_resamples: int = unc.RESAMPLES,
                   seed: int = unc.SEED) -> pd.DataFrame:
    """One row per axis value x main-table column: the two-level estimate and its 95% interval."""
    rows = []
    for value in design.axis_values:
        for col in design.columns:
            u = unit_map[(col.key, value)]
            ci = hier.hierarchical_interval(u["value"].to_numpy(), run_labels(u), n_resamples=n_resamples, seed=seed)
            rows.append({design.axis: value, "column": col.key, "case_estimate": ci.estimate,
                         "ci_low": ci.low, "ci_high": ci.high, "ci_runs": ci.n_runs, "case_units": ci.n_cases})
    return pd.DataFrame(rows)


def runs_per_seed(pairs: pd.DataFrame) -> int:
    """Paired runs one more seed adds: one per (fold, label draw) of the design."""
    return max(1, len(pairs[["fold", "label_draw"]].drop_duplicates())) if len(pairs) else 1


def _one(unit_map: Units, design: Design, value: int, col: Column, n_resamples: int, seed: int) -> dict[str, object]:
    ref = design.reference
    pairs = hier.paired_cases(unit_map[(ref.key, value)], unit_map[(col.key, value)], RUN_KEYS)
    ci = hier.hierarchical_interval(pairs["diff"].to_numpy(), pairs["run"].to_numpy(),
                                    n_resamples=n_resamples, seed=seed)
    per_run = hier.paired_run_means(pairs) if len(pairs) else pd.DataFrame(columns=["ref", "base", "diff"])
    test = rl.paired_run_test(per_run["diff"].to_numpy())
    n = len(per_run)
    sd = float(per_run["diff"].std(ddof=1)) if n > 1 else float("nan")
    return {design.axis: value, "reference": ref.key, "baseline": col.key, "runs": n,
            "cases": int(pairs["case_id"].nunique()), "run_case_units": len(pairs),
            "mean_ref": per_run["ref"].mean(), "mean_baseline": per_run["base"].mean(),
            "diff": ci.estimate, "diff_ci_low": ci.low, "diff_ci_high": ci.high,
            "run_p": test.pvalue, "run_test": test.method, "min_p": rl.min_p_run_test(n),
            "run_diff_sd": sd, "runs_per_seed": runs_per_seed(pairs),
            "per_run": " ".join(f"{k}:{v:.6g}" for k, v in zip(run_labels(per_run), per_run["diff"], strict=True))}


def _power_columns(frame: pd.DataFrame, family: int) -> pd.DataFrame:
    """MDD of each comparison's design, and the seeds that would detect its observed gap."""
    mdds, seeds = [], []
    for _, r in frame.iterrows():
        sd, n = float(r["run_diff_sd"]), int(r["runs"])
        ok = np.isfinite(sd) and sd > 0 and n >= 2
        mdds.append(pw.mdd(sd, n, family=family, target=POWER) if ok else float("nan"))
        gap = abs(float(r["diff"])) if np.isfinite(r["diff"]) else 0.0
        need = pw.pairs_for(gap, sd, family=family, target=POWER, max_pairs=MAX_PAIRS) if ok and gap > 0 else None
        seeds.append(math.ceil(need / int(r["runs_per_seed"])) if need else float("nan"))
    return frame.assign(mdd=mdds, seeds_to_decide=seeds)


def comparison_rows(unit_map: Units, design: Design, n_resamples: int = unc.RESAMPLES,
                    seed: int = unc.SEED, alpha: float = unc.SIGNIFICANCE) -> pd.DataFrame:
    """Reference minus each baseline at every axis value: two-level interval, run test, Holm, verdict.

    Holm's family is the baselines compared at one axis value; the MDD is computed at Holm's
    strictest level (alpha / family) and 80% power, from the SD of the paired run differences.
    """
    if design.reference is None:
        return pd.DataFrame()
    rows = [_one(unit_map, design, value, col, n_resamples, seed)
            for value in design.axis_values for col in design.columns if col != design.reference]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    family = int(frame.groupby(design.axis).size().max())
    frame["run_p_holm"] = frame.groupby(design.axis)["run_p"].transform(lambda p: rl.holm(p.to_numpy()))
    frame["verdict"] = [rl.run_verdict(p, lo, hi, n, alpha) for p, lo, hi, n in
                        zip(frame["run_p_holm"], frame["diff_ci_low"], frame["diff_ci_high"], frame["runs"],
                            strict=True)]
    frame["family"] = family
    return _power_columns(frame, family)


def decidable_pairs(family: int, alpha: float = unc.SIGNIFICANCE) -> int:
    """Fewest paired runs whose smallest reachable p passes Holm's strictest level alpha / family."""
    n = 2
    while rl.min_p_run_test(n) >= alpha / family:
        n += 1
    return n


def _ci_text(low: float, high: float, scale: float = SCALE) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "\u2014"
    return f"[{fmt_num(low, scale)}, {fmt_num(high, scale)}]"


def _mdd_text(row: pd.Series) -> str:
    mdd = float(row["mdd"])
    if not np.isfinite(mdd):
        return "\u221e" if int(row["runs"]) >= 2 and np.isfinite(row["run_diff_sd"]) else "\u2014"
    return fmt_num(mdd, SCALE)


def verdict_text(row: pd.Series) -> str:
    """The verdict cell: the words, and for "not separated" what would decide it."""
    word = row["verdict"]
    if word in (rl.BETTER, rl.WORSE):
        return f"{row['reference']} {word}"
    if word == rl.NO_VERDICT:
        return f"{rl.NO_VERDICT} (one run per method: add seeds)"
    return f"{rl.NOT_SEPARATED}; {decide_text(row)}"


def decide_text(row: pd.Series) -> str:
    """What the planner says would decide a "not separated" comparison."""
    family = int(row["family"])
    need = decidable_pairs(family)
    if int(row["runs"]) < need:
        return (f"{int(row['runs'])} paired runs cannot reach p < {unc.SIGNIFICANCE}/{family} whatever the gap "
                f"(needs \u2265 {need} pairs)")
    seeds = row["seeds_to_decide"]
    if np.isfinite(seeds):
        return (f"~{int(seeds)} seeds per (fold, label draw) would detect a gap of this size "
                f"({fmt_num(abs(row['diff']), SCALE)} points) with {POWER:.0%} power")
    return f"a gap this small needs more than {MAX_PAIRS} paired runs"


def _display(row: pd.Series) -> list[Cell]:
    clear = row["verdict"] in (rl.BETTER, rl.WORSE)
    return [Cell(f"{row['baseline']}"), Cell(str(row["runs"])), Cell(str(row["cases"])),
            Cell(fmt_num(row["mean_ref"], SCALE)), Cell(fmt_num(row["mean_baseline"], SCALE)),
            Cell(fmt_num(row["diff"], SCALE)), Cell(_ci_text(row["diff_ci_low"], row["diff_ci_high"])),
            Cell(fmt_p(row["run_p"])), Cell(fmt_p(row["run_p_holm"]), bold=clear), Cell(_mdd_text(row)),
            Cell(verdict_text(row), bold=clear)]


def reachable_note(frame: pd.DataFrame, axis: str) -> str:
    """The smallest p-value each number of paired runs allows, and after Holm over the family."""
    parts = []
    m = int(frame.groupby(axis).size().max()) if len(frame) else 0
    for n, p in sorted(frame.groupby("runs")["min_p"].first().items()):
        holm_min = min(1.0, m * p) if np.isfinite(p) else float("nan")
        parts.append(f"{n} paired runs: {fmt_small(p)} (after Holm over {m} baselines: {fmt_small(holm_min)})")
    return ("Smallest p-value this design can reach (every paired run favouring one method; two-sided exact "
            "sign-flip test): " + ("; ".join(parts) if parts else "none (fewer than two paired runs)") + ".")


def comparison_table(frame: pd.DataFrame, design: Design, source: str, metric_label: str) -> Table:
    """The run-level comparison table: one block of rows per axis value."""
    ref = design.reference.key
    header = [design.axis_label] + [h.replace("ref", ref) for h in HEADER]
    rows = [[Cell(str(r[design.axis]))] + _display(r) for _, r in frame.iterrows()]
    title = f"{ref} against each baseline over training runs: {metric_label} (%), 95% CI and verdict"
    notes = [
        f"Per-case values from the {source}. A run is one trained model, (fold, seed, label draw); runs: the "
        f"pairs of runs both methods have (same key = same data split); cases: distinct test cases.",
        f"\u0394 = {ref} minus baseline: mean over paired runs of the mean per-case difference within the run. "
        f"95% CI: two-level percentile bootstrap ({unc.RESAMPLES} resamples, seed {unc.SEED}): resample runs with "
        "replacement, then test cases within each drawn run (Saravanan et al. 2020), so both the training-run and "
        "the test-case variation are in the interval.",
        f"run p: exact two-sided paired permutation (sign-flip) test of the per-run mean differences "
        f"(scipy.stats.permutation_test; Monte-Carlo beyond 16 pairs); Holm-Bonferroni over the baselines at each "
        f"{design.axis_label} value.",
        f"Verdict: '{rl.BETTER}' or '{rl.WORSE}' only when the Holm-adjusted run p < {unc.SIGNIFICANCE} AND the "
        f"two-level 95% CI of \u0394 excludes 0 on the same side; otherwise '{rl.NOT_SEPARATED}'; with one run per "
        f"method, '{rl.NO_VERDICT}'.",
        f"MDD: the smallest true \u0394 this design detects with {POWER:.0%} power at Holm's strictest level "
        f"({unc.SIGNIFICANCE} / number of baselines), for the SD of the paired run differences observed here "
        "(mismatch.stats.power; \u221e: the design cannot reach that level). 'seeds per (fold, label draw)': the "
        "planner's count that would detect the observed \u0394 (`mismatch study plan --pilot`).",
        reachable_note(frame, design.axis),
    ]
    return Table("table3_runs", title, header, rows, frame, notes)


def summary_lines(frame: pd.DataFrame, design: Design, at: int) -> list[str]:
    """One plain-words line per baseline at ``at`` (the report's top summary)."""
    sel = frame[frame[design.axis] == at] if len(frame) else frame
    lines = []
    for _, r in sel.iterrows():
        ci = _ci_text(r["diff_ci_low"], r["diff_ci_high"])
        lines.append(f"{r['reference']} vs {r['baseline']}: {verdict_text(r)} (\u0394 = {fmt_num(r['diff'], SCALE)} "
                     f"points, 95% CI {ci} over runs and cases; Holm-adjusted run-level p = "
                     f"{fmt_p(r['run_p_holm'])} on {r['runs']} paired runs, {r['cases']} cases; MDD "
                     f"{_mdd_text(r)} points)")
    return lines


def rank_units(unit_map: Units, design: Design, value: int) -> dict[str, pd.DataFrame]:
    """Per main-table column, its (fold, case_id, value) units at ``value``, each the mean over the
    fold's seeds and label draws (the rank figure resamples cases within folds); empty columns left out."""
    out = {}
    for col in design.columns:
        u = unit_map[(col.key, value)]
        if len(u):
            out[col.key] = u.groupby(["fold", "case_id"], sort=True)["value"].mean().reset_index()
    return out
