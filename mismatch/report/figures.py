"""Plotly figures of the report: Fig. 5 (per-replicate curves), 6 (decoders), 8 (reliability), 9 (ECE).

Every string taken from the study goes through :func:`label`, which HTML-escapes it: plotly.js
renders a subset of HTML in titles, legends and hover labels, so an unescaped method name
could carry markup or a link into the page. Every figure titles its axes, and a method has
one colour in all of them (:mod:`mismatch.report.palette`).
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mismatch.report.ablations import decoder_frame
from mismatch.report.calibration import BIN_CENTRES, Reliability, Scatter
from mismatch.report.design import Column, Design
from mismatch.report.palette import column_colours, keyed_colours, method_colour
from mismatch.report.paper_tables import SCALE, replicate_means

LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 60, "b": 110},
          "font": {"size": 12}, "legend": {"orientation": "h", "y": -0.15, "yanchor": "top"}}
LEGEND_GAP_PX = 58  # the legend sits this far below the plot area, under the x-axis titles


def layout(height: int, top: int = 60) -> dict:
    """:data:`LAYOUT` for a figure ``height`` px tall with a ``top`` margin: the legend placed below
    the x-axis titles (plotly positions it in fractions of the plot area, so it depends on both)."""
    margin = {**LAYOUT["margin"], "t": top}
    plot = max(1, height - top - margin["b"])
    return {**LAYOUT, "height": height, "margin": margin, "legend": {**LAYOUT["legend"], "y": -LEGEND_GAP_PX / plot}}


def label(text: object) -> str:
    """Escape a study-derived string for plotly.js, which interprets HTML-like tags."""
    return html.escape(str(text), quote=True)


def key_colour(design: Design, key: str) -> str:
    """The colour of a column key, or of a ``"<column key> / <decoder>"`` key (its column's colour)."""
    palette = column_colours(design.columns)
    if key in palette:
        return palette[key]
    column = key.rsplit(" / ", 1)[0]
    return palette.get(column, method_colour(column))


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(max_cols, n))
    return math.ceil(n / cols), cols


def fold_curves(trials: pd.DataFrame, design: Design, metric_label: str) -> go.Figure:
    """Fig. 5: one panel per replicate; the metric of each method against the count axis."""
    reps = list(design.replicates)
    nrows, ncols = _grid(len(reps), 5)
    fig = make_subplots(nrows, ncols, shared_yaxes=True, subplot_titles=[f"{design.replicate} {r}" for r in reps],
                        horizontal_spacing=0.02, vertical_spacing=0.12)
    palette = column_colours(design.columns)
    for col in design.columns:
        per_value = {v: replicate_means(trials, design, col, v) for v in design.axis_values}
        for i, rep in enumerate(reps):
            y = [per_value[v].get(rep, float("nan")) * SCALE for v in design.axis_values]
            fig.add_trace(go.Scatter(x=list(design.axis_values), y=y, mode="lines+markers", name=label(col.key),
                                     legendgroup=label(col.key), showlegend=(i == 0),
                                     line={"color": palette[col.key]}),
                          row=i // ncols + 1, col=i % ncols + 1)
    fig.update_xaxes(type="log" if min(design.axis_values) > 0 else "linear", tickvals=list(design.axis_values),
                     title_text=design.axis_label)
    fig.update_yaxes(title_text=f"{metric_label} (%)", col=1)
    fig.update_layout(**layout(200 + 260 * nrows, top=90),
                      title=f"{metric_label} (%) per {design.replicate} against {design.axis_label}")
    return fig


def decoder_figure(trials: pd.DataFrame, design: Design, value: int, columns: list[Column],
                   metric_label: str) -> go.Figure:
    """Fig. 6: grouped bars, one group per replicate, one bar per network."""
    frame = decoder_frame(trials, design, value, columns)
    fig = go.Figure()
    method = design.reference.method
    ordered = sorted(frame.columns, key=lambda m: m != design.reference.model)  # its main network: its own colour
    palette = keyed_colours((model, method) for model in ordered)  # the others: shades of it
    x = [f"{design.replicate} {r}" for r in frame.index]
    for model in frame.columns:
        fig.add_trace(go.Bar(x=x, y=frame[model] * SCALE, name=label(model), marker_color=palette[model]))
    finite = frame.stack()
    low = max(0.0, float(finite.min()) * SCALE - 5) if len(finite) else 0.0
    fig.update_layout(**layout(460), barmode="group",
                      yaxis={"range": [low, None], "title": f"{metric_label} (%)"},
                      xaxis={"title": design.replicate}, legend_title_text="network",
                      title=f"Decoder ablation of {label(design.reference.method)} at {design.axis_label} = {value}")
    return fig


def reliability_figure(items: list[Reliability], design: Design, value: int) -> go.Figure:
    """Fig. 8: per method, accuracy (bars, in the method's colour) and mean confidence (markers) per bin."""
    nrows, ncols = _grid(len(items), 4)
    titles = [f"{label(r.column)}<br>ECE {r.ece:.4f}" for r in items]
    fig = make_subplots(nrows, ncols, shared_yaxes=True, subplot_titles=titles,
                        horizontal_spacing=0.03, vertical_spacing=0.16)
    for i, r in enumerate(items):
        pos = {"row": i // ncols + 1, "col": i % ncols + 1}
        fig.add_trace(go.Bar(x=BIN_CENTRES, y=r.accuracy, width=0.09, name=f"{label(r.column)} accuracy",
                             marker_color=key_colour(design, r.column), showlegend=False), **pos)
        fig.add_trace(go.Scatter(x=BIN_CENTRES, y=r.confidence, mode="markers", name="mean confidence",
                                 marker={"color": "#000000", "size": 9, "symbol": "line-ew-open",
                                         "line": {"width": 3}}, legendgroup="conf", showlegend=(i == 0)), **pos)
        fig.add_trace(go.Scatter(x=[0.5, 1], y=[0.5, 1], mode="lines", line={"dash": "dot", "color": "grey"},
                                 name="perfect calibration", legendgroup="diag", showlegend=(i == 0)), **pos)
    fig.update_xaxes(range=[0.5, 1.0], dtick=0.1, title_text="confidence")
    fig.update_yaxes(range=[0, 1.02])
    fig.update_yaxes(title_text="accuracy", col=1)
    fig.update_layout(**layout(220 + 280 * nrows, top=110),
                      title=f"Reliability diagrams at {design.axis_label} = {value}: accuracy (bars) per confidence bin")
    return fig


def scatter_figure(items: list[Scatter], design: Design, value: int, metric_label: str) -> go.Figure:
    """Fig. 9: per-image metric against ECE with each method's second-order fit."""
    fig = go.Figure()
    for s in items:
        name, colour = label(s.column), key_colour(design, s.column)
        fig.add_trace(go.Scatter(x=s.ece[s.shown], y=s.value[s.shown] * SCALE, mode="markers", name=name,
                                 legendgroup=name, marker={"color": colour, "size": 4, "opacity": 0.5}))
        x, y = fit_curve(s)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{name} fit", legendgroup=name,
                                 line={"color": colour, "width": 3}))
    shown, total = sum(len(s.shown) for s in items), sum(len(s.ece) for s in items)
    note = "" if shown == total else f" \u2014 DOWNSAMPLED: {shown:,} of {total:,} images drawn"
    fig.update_layout(**layout(560), xaxis_title="ECE", yaxis_title=f"{metric_label} (%)",
                      title=f"{metric_label} against ECE per test image at {design.axis_label} = {value}{note}")
    return fig


def fit_curve(s: Scatter, points: int = 51) -> tuple[list[float], list[float | None]]:
    """The fit of ``s`` in plotted units (percent), over the data's ECE range; points where the
    curve leaves the data's metric range are None (a gap), so it never reaches values no image has."""
    low, high = float(np.nanmin(s.ece)), float(np.nanmax(s.ece))
    floor, ceiling = float(np.nanmin(s.value)) * SCALE, float(np.nanmax(s.value)) * SCALE
    a, b, c = (float(v) * SCALE for v in s.coef)
    x = [low + (high - low) * i / (points - 1) for i in range(points)]
    y = [a * g * g + b * g + c for g in x]
    return x, [v if floor <= v <= ceiling else None for v in y]


def rank_figure(ranks: pd.DataFrame, design: Design, value: int, resamples: int) -> go.Figure:
    """How often each method ranks first over bootstrap samples of the test cases (a bar per column)."""
    fig = go.Figure(go.Bar(x=[label(c) for c in ranks["column"]], y=ranks["p_first"] * 100,
                           marker_color=[key_colour(design, c) for c in ranks["column"]],
                           text=[f"{p:.0%} (mean rank {r:.2f})" for p, r in zip(ranks["p_first"], ranks["mean_rank"],
                                                                                    strict=True)],
                           textposition="outside"))
    fig.update_layout(**layout(460), yaxis={"range": [0, 105], "title": "ranked first (% of samples)"},
                      xaxis={"title": "method"},
                      title=f"Rank stability at {design.axis_label} = {value}: share of {resamples} bootstrap "
                            "samples in which each method ranks first")
    return fig
