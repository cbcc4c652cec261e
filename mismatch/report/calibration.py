"""Calibration: reliability diagrams (Fig. 8) and ECE against the metric per image (Fig. 9).

Reliability bins are summed exactly over a column's completed trials at one count; the pooled
ECE is computed from those sums. The ECE-vs-metric fit is ``numpy.polyfit`` of degree 2 over
every image; only the scatter shown on the page is downsampled (deterministically).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mismatch.report.design import Column, Design
from mismatch.report.paper_tables import SCALE
from mismatch.report.stats import poly_fit
from mismatch.report.table_format import Cell, Table, fmt_num
from mismatch.results import N_BINS, bin_centres, bin_columns, pooled_calibration

BIN_CENTRES = bin_centres()


@dataclass(frozen=True)
class Reliability:
    """One column's reliability diagram: per-bin accuracy, confidence and pixel count."""

    column: str
    accuracy: np.ndarray
    confidence: np.ndarray
    count: np.ndarray
    ece: float
    mean_image_ece: float
    images: int


@dataclass(frozen=True)
class Scatter:
    """One column's per-image (ECE, metric) points: all of them for the fit, a sample to draw."""

    column: str
    ece: np.ndarray
    value: np.ndarray
    shown: np.ndarray  # indices of the points drawn
    coef: np.ndarray  # a, b, c of value = a ece^2 + b ece + c


def _completed(trials: pd.DataFrame, design: Design, column: Column, value: int) -> pd.DataFrame:
    sel = design.column_trials(trials, column, value)
    return sel[sel["status"] == "completed"]


def reliabilities(trials: pd.DataFrame, design: Design, value: int) -> list[Reliability]:
    """Reliability of every main column at axis ``value`` (columns without bins are skipped)."""
    out = []
    for col in design.columns:
        sel = _completed(trials, design, col, value)
        if sel.empty or not set(bin_columns()) <= set(sel.columns):
            continue
        acc, conf, count, ece = pooled_calibration(sel)
        weights = sel["n_images"].to_numpy(dtype=float)
        mean_ece = float(np.average(sel["ece_mean"], weights=weights)) if "ece_mean" in sel else np.nan
        out.append(Reliability(col.key, acc, conf, count, ece, mean_ece, int(weights.sum())))
    return out


def decoder_reliabilities(decoders: pd.DataFrame | None, trials: pd.DataFrame, design: Design,
                          value: int) -> list[tuple[Reliability, float, int]]:
    """Each decoder of every main column with several decoders (the paper's Fig. 8 columns 2-3):
    its reliability from the summed bins, with the mean foreground probability and trial count."""
    if decoders is None or decoders.empty:
        return []
    out = []
    for col in design.columns:
        sel = _completed(trials, design, col, value)
        rows = decoders[decoders["trial_id"].isin(sel.index.astype(str))].sort_values("decoder")
        for name, group in rows.groupby("decoder_name", sort=False, observed=True):
            acc, conf, count, ece = pooled_calibration(group)
            images = int(sel.loc[sel.index.astype(str).isin(group["trial_id"]), "n_images"].sum())
            item = Reliability(f"{col.key} / {name}", acc, conf, count, ece, np.nan, images)
            out.append((item, float(group["mean_fg_prob"].mean()), len(group)))
    return out


def decoder_table(items: list[tuple[Reliability, float, int]], design: Design, value: int) -> Table:
    """Per decoder: pooled ECE and the mean probability on true foreground (confidence shift)."""
    header = ["method / decoder", "trials", "images", "ECE (pooled)", "mean foreground probability"]
    rows, data = [], []
    for r, fg, n in items:
        rows.append([Cell(r.column), Cell(str(n)), Cell(str(r.images)), Cell(fmt_num(r.ece, 1, 4)),
                     Cell(fmt_num(fg, 1, 4))])
        data.append({"column": r.column, design.axis: value, "trials": n, "images": r.images, "ece_pooled": r.ece,
                     "mean_fg_prob": fg})
    notes = ["Each decoder's own probability (mean over the same snapshots as the ensemble), summed over "
             "the test images of the column's completed trials. Mean foreground probability: mean over "
             "trials of the decoder's mean probability on ground-truth foreground pixels; MisMatch's claim "
             "is that the PASB decoder raises it and the NASB decoder lowers it."]
    return Table("fig8_decoders", f"Confidence of each decoder ({design.axis_label} = {value})", header, rows,
                 pd.DataFrame(data), notes)


def sample_indices(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """At most ``limit`` sorted indices of ``range(n)``, uniformly at random with a fixed seed."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def scatters(images: pd.DataFrame, trials: pd.DataFrame, design: Design, value: int, metric: str,
             limit: int) -> list[Scatter]:
    """Per-image ECE and metric of every main column at ``value``, fitted and sampled."""
    if "ece" not in images:
        return []
    out = []
    for col in design.columns:
        sel = _completed(trials, design, col, value)
        rows = images.loc[images["trial_id"].isin(sel.index).to_numpy(), ["ece", metric]]
        if rows.empty:
            continue
        ece, val = rows["ece"].to_numpy(float), rows[metric].to_numpy(float)
        out.append(Scatter(col.key, ece, val, sample_indices(len(ece), limit), poly_fit(ece, val, 2)))
    return out


def reliability_table(items: list[Reliability], design: Design, value: int) -> Table:
    """ECE per column with per-bin accuracy / confidence (the numbers behind Fig. 8)."""
    header = ["method", "images", "ECE (pooled)", "mean image ECE"] + [
        f"acc/conf {c - 0.05:.1f}-{c + 0.05:.1f}" for c in BIN_CENTRES]
    rows, data = [], []
    for r in items:
        bins = [Cell(f"{fmt_num(a, 1, 3)}/{fmt_num(c, 1, 3)}") for a, c in zip(r.accuracy, r.confidence, strict=True)]
        rows.append([Cell(r.column), Cell(str(r.images)), Cell(fmt_num(r.ece, 1, 4)),
                     Cell(fmt_num(r.mean_image_ece, 1, 4))] + bins)
        for k in range(N_BINS):
            data.append({"column": r.column, design.axis: value, "bin": k, "count": r.count[k],
                         "accuracy": r.accuracy[k], "confidence": r.confidence[k],
                         "ece_pooled": r.ece, "mean_image_ece": r.mean_image_ece})
    notes = ["Pooled ECE: sum over bins |B|/n |acc(B) - conf(B)| from the summed bin columns of "
             "every test image of the column's completed trials; mean image ECE: mean of the "
             f"per-image ECE column. Confidence is max(p, 1-p) in {N_BINS} equal bins of [0.5, 1]."]
    return Table("fig8_reliability", f"Calibration at {design.axis_label} = {value}", header, rows,
                 pd.DataFrame(data), notes)


def fit_table(items: list[Scatter], design: Design, value: int, metric_label: str) -> Table:
    """Coefficients of the second-order fit of the metric against ECE, per column, in the plotted
    units (the metric in percent, as Fig. 9 draws it); the CSV keeps both units."""
    header = ["method", "images", "a (% per ECE\u00b2)", "b (% per ECE)", "c (%)", "points shown"]
    rows, data = [], []
    for s in items:
        a, b, c = s.coef
        rows.append([Cell(s.column), Cell(str(len(s.ece)))] + [Cell(fmt_num(v, SCALE, 2)) for v in (a, b, c)]
                    + [Cell(str(len(s.shown)))])
        data.append({"column": s.column, design.axis: value, "images": len(s.ece), "a": a, "b": b, "c": c,
                     "a_percent": a * SCALE, "b_percent": b * SCALE, "c_percent": c * SCALE,
                     "points_shown": len(s.shown)})
    notes = [f"Least-squares fit {metric_label} (%) = a ECE\u00b2 + b ECE + c (numpy.polyfit, degree 2) over "
             "every test image of the column's completed trials, whatever the number of points drawn; the "
             "coefficients are in the plotted units (percent). Fig. 9 draws each fit over its data's ECE range "
             "and leaves it out where it leaves the range of the metric's values."]
    return Table("fig9_ece_fit", f"{metric_label} against ECE: second-order fits ({design.axis_label} = {value})",
                 header, rows, pd.DataFrame(data), notes)
