"""The report's sections: each turns the study context into page content and the tables it shows.

Sections never fail the whole report for lack of data: a study without an alpha sweep, maps,
an Optuna search or trial-level rows gets a sentence saying so instead of the section's figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go

from mismatch.report import (
    ablations,
    calibration,
    classes,
    comparison,
    figures,
    inventory,
    paper_tables,
    published,
    runs,
    search,
    significance,
    uncertainty,
    visual,
)
from mismatch.report.cases import CaseValues
from mismatch.report.design import Design
from mismatch.report.html import Section, bullets, figure_html, paragraph, table_html, visual_html
from mismatch.report.load import StudyData
from mismatch.report.sequential import sequential_note
from mismatch.report.table_format import Cell, Table, fmt_small
from mismatch.stats.runlevel import min_p_run_test

Built = tuple[Section, list[Table]]


@dataclass
class Context:
    """Everything a section may use: rows, detected design and the report's options."""

    data: StudyData
    images: pd.DataFrame
    trials: pd.DataFrame
    design: Design
    metric: str
    metric_label: str
    at: int
    calibration_at: int
    options: dict[str, object]
    cases: CaseValues | None = None
    intervals: pd.DataFrame | None = None
    comparisons: pd.DataFrame | None = None
    units: comparison.Units | None = None
    sequential: dict[str, object] | None = None
    figures: dict[str, go.Figure] = field(default_factory=dict)

    def figure(self, fig: go.Figure, div_id: str, caption: str = "") -> str:
        """The figure's HTML; the figure is also kept under ``div_id`` for static export."""
        self.figures[div_id] = fig
        return figure_html(fig, div_id, caption)


def interval_note(ctx: Context) -> str:
    """What the ``[low, high]`` after each main-table cell is (or why there is none)."""
    if ctx.cases is None:
        return "No 95% intervals: the rows carry no test-case ids."
    return (f"2-level m [low, high]: the mean over training runs (fold, seed, label draw) of the per-case "
            f"mean within the run (m), and its 95% two-level percentile bootstrap interval ({uncertainty.RESAMPLES} "
            f"resamples, seed {uncertainty.SEED}): runs are resampled, then test cases within each drawn run "
            "(Saravanan et al. 2020), so the interval covers a new training run as well as new test cases. It "
            f"weighs test cases equally where the first number weighs test images. Per-case values from the "
            f"{ctx.cases.source}. No interval: fewer than two runs (one trained model says nothing about the "
            "method's run-to-run spread).")


def aggregation_line(trials: pd.DataFrame) -> str:
    """Which training runs the numbers rest on: folds x label draws x seeds, with their counts."""
    done = trials[trials["status"] == "completed"]
    draws = done["label_draw"].nunique() if "label_draw" in done else 1
    return (f"Every verdict rests on training runs, each one trained model: folds x label draws x seeds "
            f"({done['fold'].nunique()} folds, {draws} label draw{'s' if draws != 1 else ''}, "
            f"{done['seed'].nunique()} seeds); methods are paired by run (same fold, seed and label draw = same "
            "data split), and the test cases of each run are the lower level of every interval.")


def verdict_section(ctx: Context) -> Built:
    """The plain-words summary at the top: a verdict per comparison, and the degenerate warning."""
    sec = Section("verdict", "Summary: what separates the methods", [paragraph(aggregation_line(ctx.trials))])
    d = ctx.design
    narrow = ctx.trials[["method", "model", "alpha_key", d.axis, d.replicate, "status", "value"]]
    cells = paper_tables.summary_cells(narrow, d, list(d.columns), list(d.axis_values))
    if len(cells) and uncertainty.degenerate(cells["mean"], ctx.metric):
        limit = uncertainty.degenerate_threshold(ctx.metric) * paper_tables.SCALE
        sec.body.append(paragraph(
            f"WARNING: every method's {ctx.metric_label} is below {limit:.1f}% in every cell (the equivalent of "
            f"{uncertainty.DEGENERATE_IOU:.0%} foreground IoU): no method learnt the task (a smoke profile or a "
            "failed setup?). Nothing below ranks methods meaningfully.", "warn"))
    if ctx.comparisons is None or ctx.comparisons.empty:
        sec.body.append(paragraph("No comparison: no reference method, no baseline or no test-case ids."))
        return sec, []
    lines = comparison.summary_lines(ctx.comparisons, ctx.design, ctx.at)
    sec.body += [paragraph(f"At {ctx.design.axis_label} = {ctx.at}, over training runs and test cases (exact "
                           "run-level paired test with Holm, and the two-level 95% bootstrap interval of the "
                           "difference; 'better'/'worse' only when both agree):"),
                 bullets(lines)]
    if ctx.sequential is not None:
        sec.body.append(paragraph(sequential_note(ctx.sequential)))
    caveat = training_runs_caveat(ctx.comparisons, ctx.design, ctx.at)
    if caveat:
        sec.body.append(paragraph(caveat, "warn"))
    return sec, []


def training_runs_caveat(frame: pd.DataFrame, design: Design, at: int) -> str:
    """What the design can and cannot decide at ``at``: one run per method, or too few pairs."""
    sel = frame[frame[design.axis] == at]
    if sel.empty:
        return ""
    runs, family = int(sel["runs"].min()), int(sel["family"].max())
    need = comparison.decidable_pairs(family)
    if runs < 2:
        return ("No verdict: each method has one training run per cell here, and one trained model per method "
                "says nothing about the method (a rerun with another seed can reverse it). Add seeds (the study "
                f"file's grid: seed: [0, 1, 2]) or folds: with {family} baseline{'s' if family != 1 else ''} a "
                f"verdict needs at least {need} paired runs.")
    if runs < need:
        floor = significance_floor(runs, family)
        return (f"This design cannot separate the methods: {runs} paired runs give a run-level p of at least "
                f"{fmt_small(floor)} after Holm over {family} baseline{'s' if family != 1 else ''}, never below "
                f"0.05. Add seeds or folds until there are at least {need} paired runs (`mismatch study plan`).")
    return ""


def significance_floor(runs: int, family: int) -> float:
    """The smallest Holm-adjusted run-level p that ``runs`` pairs can give."""
    return min(1.0, family * min_p_run_test(runs))


def main_section(ctx: Context) -> Built:
    """Tables I/II: methods against the count axis, with costs (and the published numbers)."""
    table = paper_tables.main_table(ctx.trials, ctx.design, ctx.metric_label, ctx.intervals, interval_note(ctx))
    sec = Section("main", "Tables I/II: methods compared", [table_html(table)])
    out = [table]
    per_class = classes.class_table(ctx.data.class_rows(), ctx.trials, ctx.design)
    if per_class is not None:  # multi-class studies only
        out.append(per_class)
    if ctx.metric == "mean_dice_2class" and ctx.design.axis == "labelled_slices":
        out.append(published.published_table())
    if published.benchmark_points(ctx.data.trials):  # read the cases table only for a benchmark study
        benchmarks = published.benchmark_table(ctx.data.trials, ctx.data.case_rows())
        out += [benchmarks] if benchmarks is not None else []
    sec.body += [table_html(t) for t in out[1:]]
    return sec, out


def significance_section(ctx: Context) -> Built:
    """Table III: p-values of the reference against each baseline."""
    sec = Section("pvalues", "Table III: statistical tests")
    table = significance.pvalue_table(ctx.trials, ctx.design, ctx.at, str(ctx.options["mwu_alternative"]),
                                      str(ctx.options["mwu_method"]))
    if table is None:
        sec.body.append(paragraph("No reference method (or no baseline) in this study: no tests.", "warn"))
        return sec, []
    sec.body.append(table_html(table))
    out = [table]
    if ctx.comparisons is not None and not ctx.comparisons.empty:
        cases = comparison.comparison_table(ctx.comparisons, ctx.design, ctx.cases.source, ctx.metric_label)
        sec.body.append(table_html(cases))
        out.append(cases)
    else:
        sec.body.append(paragraph("No run-level tests: the rows carry no test-case ids."))
    return sec, out


def rank_section(ctx: Context) -> Built | None:
    """How often each method ranks first over bootstrap samples of the test cases (at ``at``)."""
    if ctx.units is None or len(ctx.design.columns) < 2:
        return None
    units = comparison.rank_units(ctx.units, ctx.design, ctx.at)
    ranks = uncertainty.rank_first(units)
    sec = Section("ranks", "Rank stability")
    if ranks.empty:
        sec.body.append(paragraph(f"No test case is scored by every method at {ctx.design.axis_label} = {ctx.at}."))
        return sec, []
    fig = figures.rank_figure(ranks, ctx.design, ctx.at, uncertainty.RESAMPLES)
    caption = (f"Test cases scored by every method ({int(ranks['cases'].iloc[0])} (fold, case) units) resampled "
               f"within folds, jointly for all methods, {uncertainty.RESAMPLES} times (seed {uncertainty.SEED}); "
               "each sample ranks the methods by the mean over folds of the per-case mean; ties share the win. "
               "A method ranked first in well under 95% of samples is not reliably the best.")
    table = Table("rank_stability", f"Rank stability at {ctx.design.axis_label} = {ctx.at}",
                  ["method", "ranked first", "mean rank"],
                  [[Cell(str(r["column"])), Cell(f"{r['p_first']:.1%}"), Cell(f"{r['mean_rank']:.2f}")]
                   for _, r in ranks.iterrows()], ranks)
    sec.body += [ctx.figure(fig, "rank-stability", caption), table_html(table)]
    return sec, [table]


def runs_section(ctx: Context) -> Built | None:
    """Training runs: variance components per method and every trained model as a point (at ``at``)."""
    if ctx.units is None:
        return None
    sec = Section("runs", "Training runs and test cases: where the variance comes from")
    frame = runs.components_frame(ctx.units, ctx.design, ctx.at)
    if frame.empty:
        sec.body.append(paragraph(f"No per-case values at {ctx.design.axis_label} = {ctx.at}."))
        return sec, []
    table = runs.components_table(frame, ctx.design, ctx.at, ctx.metric_label)
    means = runs.run_means(ctx.units, ctx.design, ctx.at)
    caption = ("Each point is one trained model (fold / seed / label draw): the mean over its test cases. A grey "
               "line joins the runs of different methods trained and tested on the same split: the run-level test "
               "pairs exactly these. Lines that cross are what makes a verdict need several runs.")
    sec.body += [ctx.figure(runs.components_figure(frame, ctx.design, ctx.at), "variance-components"),
                 table_html(table),
                 ctx.figure(runs.run_figure(means, ctx.design, ctx.at, ctx.metric_label), "per-run", caption)]
    return sec, [table]


def curves_section(ctx: Context) -> Built:
    """Fig. 5: per-replicate curves against the count axis."""
    fig = figures.fold_curves(ctx.trials, ctx.design, ctx.metric_label)
    caption = (f"Each panel is one {ctx.design.replicate}; each point is the mean {ctx.metric_label} over "
               "the test images of that trial (mean over trials if several share the cell).")
    title = f"Fig. 5: per-{ctx.design.replicate} results"
    return Section("curves", title, [ctx.figure(fig, "fig5", caption)]), []


def ablation_section(ctx: Context) -> Built:
    """Table IV (alpha) and Fig. 6 (decoder ablation per replicate)."""
    sec, out = Section("ablations", "Table IV and Fig. 6: ablations"), []
    alpha = ablations.alpha_table(ctx.trials, ctx.design, ctx.metric_label)
    if alpha is None:
        sec.body.append(paragraph("No alpha ablation: the reference method was run with one alpha per count."))
    else:
        sec.body.append(table_html(alpha))
        out.append(alpha)
    variants = ablations.decoder_variants(ctx.trials, ctx.design)
    if not variants:
        sec.body.append(paragraph("No decoder ablation: the reference method was run with one network per count."))
    for value, columns in variants.items():
        frame = ablations.decoder_frame(ctx.trials, ctx.design, value, columns)
        table = ablations.decoder_table(frame, ctx.design, value, ctx.metric_label)
        fig = figures.decoder_figure(ctx.trials, ctx.design, value, columns, ctx.metric_label)
        sec.body += [ctx.figure(fig, f"fig6-{value}"), table_html(table)]
        out.append(table)
    return sec, out


def calibration_section(ctx: Context) -> Built:
    """Fig. 8 (reliability diagrams) and Fig. 9 (ECE against the metric, with fits)."""
    sec, out, value = Section("calibration", "Fig. 8 and Fig. 9: calibration"), [], ctx.calibration_at
    items = calibration.reliabilities(ctx.trials, ctx.design, value)
    if items:
        table = calibration.reliability_table(items, ctx.design, value)
        sec.body += [ctx.figure(figures.reliability_figure(items, ctx.design, value), "fig8"), table_html(table)]
        out.append(table)
    per_decoder = calibration.decoder_reliabilities(ctx.data.decoder_rows(), ctx.trials, ctx.design, value)
    if per_decoder:
        table = calibration.decoder_table(per_decoder, ctx.design, value)
        fig = figures.reliability_figure([r for r, _, _ in per_decoder], ctx.design, value)
        fig.update_layout(title=f"Reliability of each decoder at {ctx.design.axis_label} = {value}")
        sec.body += [ctx.figure(fig, "fig8-decoders"), table_html(table)]
        out.append(table)
    limit = int(ctx.options["max_points"])
    points = calibration.scatters(ctx.images, ctx.trials, ctx.design, value, ctx.metric, limit)
    if points:
        fits = calibration.fit_table(points, ctx.design, value, ctx.metric_label)
        shown, total = sum(len(p.shown) for p in points), sum(len(p.ece) for p in points)
        caption = ("Every test image is drawn." if shown == total else
                   f"Downsampled for display: {shown:,} of {total:,} images drawn (at most {limit:,} per method, "
                   "uniform random sample with seed 0); the fitted curves use every image.")
        sec.body += [ctx.figure(figures.scatter_figure(points, ctx.design, value, ctx.metric_label), "fig9", caption),
                     table_html(fits)]
        out.append(fits)
    if not sec.body:
        sec.body.append(paragraph("No calibration columns (ece, reliability bins) in the rows.", "warn"))
    return sec, out


def visual_section(ctx: Context) -> Built:
    """Fig. 7: stored prediction maps of a few fixed test slices."""
    sec = Section("visual", "Fig. 7: visual results")
    grid = visual.visual_grid(ctx.data, ctx.trials, ctx.design, ctx.calibration_at,
                              int(ctx.options["visual_slices"]))
    if grid is None:
        sec.body.append(paragraph(f"No prediction maps stored at {ctx.design.axis_label} = {ctx.calibration_at} "
                                  "(trials write them with train.prediction_maps > 0)."))
        return sec, []
    trials = "; ".join(f"{k}: {v}" for k, v in grid.trials.items())
    sec.body += [paragraph(f"{ctx.design.replicate} {grid.replicate}, {ctx.design.axis_label} = {grid.value}. "
                           f"Trials: {trials}."), visual_html(grid)]
    return sec, []


def search_section(ctx: Context) -> Built | None:
    """The Optuna search, or None when the study has none."""
    journal = ctx.data.optuna_journal()
    if journal is None:
        return None
    result = search.load_search(journal)
    sec = Section("search", "Hyper-parameter search (Optuna)", [bullets(result.facts)] if result.facts else [])
    if result.error:
        sec.body.append(paragraph(f"Could not read the search journal: {result.error}", "warn"))
    for i, (_, fig) in enumerate(result.figures):
        sec.body.append(ctx.figure(fig, f"optuna-{i}"))
    return sec, []


def missing_section(ctx: Context) -> Built:
    """Incomplete cells, failed trials, and every trial (collapsed)."""
    cells = paper_tables.summary_cells(ctx.trials, ctx.design, list(ctx.design.columns), list(ctx.design.axis_values))
    missing = inventory.incomplete_table(cells, ctx.design)
    failed = inventory.failed_table(ctx.trials, ctx.design)
    every = inventory.trials_table(ctx.trials, ctx.metric)
    sec = Section("missing", "What is missing")
    if ctx.data.trials is None:
        sec.body.append(paragraph("Input is a merged per-image file: failed trials cannot be known.", "warn"))
    if ctx.data.uncommitted:
        names = " ".join(ctx.data.uncommitted)
        sec.body.append(paragraph(f"{len(ctx.data.uncommitted)} image files have no trials row (a trial that "
                                  f"stopped while writing) and were not read: {names}", "warn"))
    if ctx.data.corrupt:
        listing = "; ".join(f"{path} ({error})" for path, error in ctx.data.corrupt.items())
        sec.body.append(paragraph(f"{len(ctx.data.corrupt)} corrupt results files could not be read and were left "
                                  f"out (`mismatch study run` moves them to quarantine/ and runs their trials "
                                  f"again): {listing}", "warn"))
    for table, empty in ((missing, "Every cell of the main table has all replicates."),
                         (failed, "No failed trials.")):
        sec.body.append(table_html(table) if table.rows else paragraph(empty))
    sec.body.append(table_html(every, collapsed=True))
    return sec, [missing, failed, every]


def provenance_section(ctx: Context) -> Built:
    """Where the rows came from and how the report was made."""
    table = inventory.provenance_table(ctx.data, ctx.trials, ctx.design, ctx.options)
    return Section("provenance", "Provenance", [table_html(table)]), [table]
