"""Ablations of the reference method: Table IV (alpha) and Fig. 6 (decoders, per replicate).

The alpha ablation uses the reference method with the reference network, grouped by alpha,
at every count where several alphas were run. The decoder ablation uses the reference method
at the reference alpha, grouped by network (``mm``, ``mm-a``, ``mm-b``, ``mm-c``), at every
count where several networks were run.
"""

from __future__ import annotations

import pandas as pd

from mismatch.report.design import Column, Design
from mismatch.report.paper_tables import SCALE, replicate_means, summary_cells, summary_table
from mismatch.report.stats import mean_std
from mismatch.report.table_format import Cell, Table, fmt_num


def _alpha_order(key: str) -> float:
    return -1.0 if key == "" else float(key)


def alpha_table(trials: pd.DataFrame, design: Design, metric_label: str) -> Table | None:
    """Table IV: counts where several alphas exist x alpha, or None without an alpha sweep."""
    ref = design.reference
    if ref is None:
        return None
    sel = trials[(trials["method"] == ref.method) & (trials["model"] == ref.model)]
    values = [int(v) for v, g in sel.groupby(design.axis) if g["alpha_key"].nunique() > 1]
    if not values:
        return None
    alphas = sorted(sel[sel[design.axis].isin(values)]["alpha_key"].unique(), key=_alpha_order)
    columns = [Column(f"alpha={a or 'none'}", ref.method, ref.model, a) for a in alphas]
    cells = summary_cells(trials, design, columns, values)
    title = f"Alpha ablation of {ref.key} ({ref.model}): {metric_label} (%)"
    table = summary_table(cells, design, columns, "table4_alpha", title)
    table.notes = [f"Trials of method {ref.method} with network {ref.model}, grouped by alpha; "
                   f"mean \u00b1 std over {design.replicate}s; bold: best of the row."]
    return table


def decoder_variants(trials: pd.DataFrame, design: Design) -> dict[int, list[Column]]:
    """Per count with several networks of the reference method: one column per network."""
    ref = design.reference
    if ref is None:
        return {}
    sel = trials[(trials["method"] == ref.method) & (trials["alpha_key"] == ref.alpha_key)]
    out = {}
    for value, group in sel.groupby(design.axis):
        models = sorted(group["model"].unique(), key=lambda m: (m == ref.model, m))
        if len(models) > 1:
            out[int(value)] = [Column(m, ref.method, m, ref.alpha_key) for m in models]
    return out


def decoder_frame(trials: pd.DataFrame, design: Design, value: int, columns: list[Column]) -> pd.DataFrame:
    """Replicate x network matrix of per-replicate means (NaN where missing)."""
    series = {c.key: replicate_means(trials, design, c, value) for c in columns}
    frame = pd.DataFrame(series).reindex(list(design.replicates))
    frame.index.name = design.replicate
    return frame


def decoder_table(frame: pd.DataFrame, design: Design, value: int, metric_label: str) -> Table:
    """Per-replicate table of the decoder ablation (best per row in bold) with a mean row."""
    rows = []
    for rep, values in frame.iterrows():
        best = values.max()
        rows.append([Cell(f"{design.replicate} {rep}")] + [
            Cell(fmt_num(v, SCALE), bold=bool(v == best), missing=pd.isna(v)) for v in values])
    summary = [mean_std(frame[c].to_numpy()) for c in frame.columns]
    top = max((m for m, _, n in summary if n), default=None)
    rows.append([Cell("mean \u00b1 std")] + [
        Cell(f"{fmt_num(m, SCALE)} \u00b1 {fmt_num(s, SCALE)} ({n}/{len(frame)})" if n < len(frame)
             else f"{fmt_num(m, SCALE)} \u00b1 {fmt_num(s, SCALE)}", bold=(m == top)) for m, s, n in summary])
    wins = int((frame.idxmax(axis=1) == frame.columns[-1]).sum()) if frame.notna().any().any() else 0
    ref = design.reference
    data = frame.reset_index().melt(id_vars=design.replicate, var_name="model", value_name="mean")
    data.insert(0, design.axis, value)
    title = f"Decoder ablation of {ref.method} at {design.axis_label} = {value}: {metric_label} (%)"
    notes = [f"Trials of method {ref.method} at alpha {ref.alpha_key or 'none'}, grouped by network; "
             f"{frame.columns[-1]} is best in {wins} of {len(frame)} {design.replicate}s."]
    return Table(f"decoder_ablation_{value}", title, [design.replicate] + list(frame.columns), rows, data, notes)
