"""Training runs as the unit of the verdicts: variance components per method, per-run paired plot.

The panel answers the reviewer's question "how much of this spread is the training run and how
much the test set?": per method and count, a one-way random-effects decomposition of the
per-(run, case) values into a between-run and a within-run (test-case) variance
(:func:`mismatch.stats.components.variance_components`), and a plot in which every trained
model is one point and a line joins the runs of two methods trained on the same split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mismatch.report.cases import RUN_KEYS
from mismatch.report.comparison import Units, run_labels
from mismatch.report.design import Design
from mismatch.report.figures import key_colour, label, layout
from mismatch.report.paper_tables import SCALE
from mismatch.report.table_format import Cell, Table, fmt_num
from mismatch.stats.components import variance_components


def components_frame(unit_map: Units, design: Design, at: int) -> pd.DataFrame:
    """One row per main-table column at ``at``: run and case variance components, shares, n."""
    rows = []
    for col in design.columns:
        u = unit_map[(col.key, at)]
        if u.empty:
            continue
        vc = variance_components(u["value"].to_numpy(), run_labels(u))
        rows.append({"column": col.key, design.axis: at, "runs": vc.n_runs, "cases_per_run": vc.cases_per_run,
                     "mean": vc.mean, "run_sd": np.sqrt(vc.run_var), "case_sd": np.sqrt(vc.case_var),
                     "icc": vc.icc, "run_share": vc.run_share})
    return pd.DataFrame(rows)


def _pct(x: float) -> str:
    return f"{x:.0%}" if np.isfinite(x) else "\u2014"


def components_table(frame: pd.DataFrame, design: Design, at: int, metric_label: str) -> Table:
    """The variance-components panel as a table (the figure shows the same shares)."""
    rows = [[Cell(str(r["column"])), Cell(str(r["runs"])), Cell(f"{r['cases_per_run']:.1f}"),
             Cell(fmt_num(r["run_sd"], SCALE)), Cell(fmt_num(r["case_sd"], SCALE)), Cell(_pct(r["icc"])),
             Cell(_pct(r["run_share"]))] for _, r in frame.iterrows()]
    notes = [
        f"One-way random-effects ANOVA (method of moments) of the per-(run, case) {metric_label} at "
        f"{design.axis_label} = {at}: run SD = the SD of the true run means (training runs: fold, seed, label "
        "draw); case SD = the SD of test cases within a run. Both in points.",
        "run share of one run's mean: run variance / (run variance + case variance / cases per run): how much of "
        "the uncertainty of a single trained model's score comes from the training run rather than from its test "
        "cases. Near 100%: more test cases do not help, more runs do. ICC: run variance / (run + case variance).",
        "A run SD of 0 means the runs differ no more than their test cases predict (the estimate is truncated at "
        "0); with fewer than two runs the run SD cannot be estimated (\u2014).",
    ]
    return Table("variance_components", f"Variance components at {design.axis_label} = {at}",
                 ["method", "runs", "cases per run", "run SD", "case SD", "ICC", "run share of one run's mean"],
                 rows, frame, notes)


def components_figure(frame: pd.DataFrame, design: Design, at: int) -> go.Figure:
    """Stacked bars: the share of one run's mean variance from training runs vs from test cases."""
    fig = go.Figure()
    keys = [label(k) for k in frame["column"]]
    share = frame["run_share"].fillna(0).to_numpy()
    fig.add_bar(x=keys, y=share * 100, name="training runs", marker_color="#4c72b0")
    fig.add_bar(x=keys, y=(1 - share) * 100 * frame["run_share"].notna(), name="test cases", marker_color="#c7c7c7")
    fig.update_layout(**layout(420), barmode="stack",
                      title=f"Where the variance of one run's score comes from ({design.axis_label} = {at})")
    fig.update_yaxes(title_text="share of the variance (%)", range=[0, 100])
    fig.update_xaxes(title_text="method")
    return fig


def run_means(unit_map: Units, design: Design, at: int) -> pd.DataFrame:
    """Per main-table column and run at ``at``: the mean over the run's test cases."""
    parts = []
    for col in design.columns:
        u = unit_map[(col.key, at)]
        if len(u):
            means = u.groupby(list(RUN_KEYS), sort=True)["value"].mean().reset_index()
            means["column"] = col.key
            parts.append(means)
    if not parts:
        return pd.DataFrame(columns=[*RUN_KEYS, "value", "column"])
    frame = pd.concat(parts, ignore_index=True)
    frame["run"] = run_labels(frame)
    return frame


def run_figure(means: pd.DataFrame, design: Design, at: int, metric_label: str) -> go.Figure:
    """Each trained model one point; grey lines join the runs of the methods on the same split."""
    fig = go.Figure()
    order = [c.key for c in design.columns if c.key in set(means["column"])]
    for _, group in means.groupby("run", sort=True):
        group = group.set_index("column").reindex(order).dropna(subset=["value"])
        fig.add_scatter(x=[label(k) for k in group.index], y=group["value"] * SCALE, mode="lines",
                        line={"color": "rgba(120,120,120,0.45)", "width": 1}, showlegend=False, hoverinfo="skip")
    for key in order:
        sel = means[means["column"] == key]
        fig.add_scatter(x=[label(key)] * len(sel), y=sel["value"] * SCALE, mode="markers", name=label(key),
                        marker={"color": key_colour(design, key), "size": 9},
                        text=[label(f"run {r}") for r in sel["run"]], hovertemplate="%{text}: %{y:.2f}<extra></extra>")
    fig.update_layout(**layout(460), title=f"Every trained model at {design.axis_label} = {at}")
    fig.update_yaxes(title_text=f"mean {metric_label} over the run's test cases (%)")
    fig.update_xaxes(title_text="method")
    return fig
