"""Published reference figures, shown beside a study's own numbers, labelled with their source.

The paper's CARVE tables report what the authors' code called "IoU": the per-slice two-class
mean Dice (``mean_dice_2class`` here), mean over 10 folds, in percent. Source:
shared/reference/official-implementation.md ("Published reference numbers").

The semi-supervised benchmarks' figures (:data:`BENCHMARK_FIGURES`, issue 15): Dice in percent
on the 20 LA test volumes (8 / 16 labelled volumes of 80) and on ACDC's test patients (3 / 7
labelled patients; mean over RV, Myo and LV), each from its paper or its official repository.
:func:`benchmark_table` shows them beside what a study reproduced on the same benchmark and
budget (``protocol.split: lists``): they come from other protocols, networks and training
lengths, so they are context, never a comparison this study tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mismatch.report.table import Cell, Table, fmt_small

METHODS = ("sup1", "sup2", "mta", "mean-teacher", "fixmatch", "cct", "morph", "mismatch")
TABLE_I = {  # labelled slices -> means in METHODS order
    5: (48.32, 50.75, 54.91, 56.56, 49.30, 52.54, 52.93, 60.25),
    10: (53.38, 55.55, 57.78, 57.99, 51.53, 55.25, 57.08, 60.04),
    30: (52.09, 53.98, 60.78, 60.46, 55.16, 60.81, 60.19, 63.59),
    50: (60.69, 64.79, 68.11, 67.21, 62.91, 65.06, 64.88, 69.39),
    100: (68.74, 73.1, 72.48, 71.48, 72.58, 72.07, 72.11, 74.83),
}
TABLE_III = {"sup1": 9.13e-5, "sup2": 1.55e-2, "mta": 4.5e-3, "mean-teacher": 4.3e-4, "fixmatch": 1.05e-2,
             "cct": 1.8e-3, "morph": 2.2e-3}
TABLE_IV = {0.0: 50.75, 0.0005: 59.16, 0.001: 59.45, 0.002: 60.25, 0.004: 58.89}


def published_table() -> Table:
    """Table I of the paper (CARVE, mean over 10 folds), best of each row in bold."""
    rows, data = [], []
    for count, values in TABLE_I.items():
        best = max(values)
        rows.append([Cell(str(count))] + [Cell(f"{v:.2f}", bold=(v == best)) for v in values])
        data += [{"labelled_slices": count, "method": m, "mean": v} for m, v in zip(METHODS, values, strict=True)]
    pvalues = ", ".join(f"{m} {fmt_small(p, 3)}" for m, p in TABLE_III.items())
    alphas = ", ".join(f"{a:g}: {v:.2f}" for a, v in TABLE_IV.items())
    notes = ["Published CARVE numbers: the authors' \"IoU\", i.e. the two-class mean Dice, mean over 10 folds. "
             "Comparable with this study only when it ran on CARVE with the paper's protocol (see the "
             "dataset fingerprint under Provenance).",
             f"Published Table III (one-sided asymptotic Mann-Whitney U, 100 labelled slices): {pvalues}.",
             f"Published Table IV (alpha at 5 labelled slices): {alphas}."]
    return Table("published_table1", "Published Table I (CARVE) for comparison", ["labelled slices", *METHODS],
                 rows, pd.DataFrame(data), notes)


# ----------------------------------------------------------------------------- benchmarks


@dataclass(frozen=True)
class Reference:
    """One published Dice (percent) on a benchmark at a labelled budget, with its source.

    ``budget`` counts labelled volumes (LA) or patients (ACDC); ``method`` is the registry name
    when this project has the method (so reproduced rows line up), else the paper's name."""

    benchmark: str
    budget: int
    method: str
    dice: float
    source: str


_MC_NET = "Wu et al., MC-Net, MICCAI 2021, Table 1 (LA, 10% / 20% labelled)"
_UNIMATCH_README = "UniMatch repository (LiheYoung/UniMatch), more-scenarios/medical/README.md, ACDC table"
BENCHMARK_FIGURES: tuple[Reference, ...] = (
    Reference("LA", 8, "ua-mt", 84.25, f"{_MC_NET}, UA-MT re-run"),
    Reference("LA", 16, "ua-mt", 88.88, "Yu et al., UA-MT, MICCAI 2019, Table 1 (LA, 16 labelled)"),
    Reference("LA", 8, "MC-Net", 87.71, _MC_NET),
    Reference("LA", 16, "MC-Net", 90.34, _MC_NET),
    Reference("LA", 8, "bcp", 89.62, "Bai et al., BCP (Bidirectional Copy-Paste), CVPR 2023, LA table (8 labelled)"),
    Reference("ACDC", 3, "ua-mt", 61.0, f"{_UNIMATCH_README}, as reported there"),
    Reference("ACDC", 7, "ua-mt", 81.5, f"{_UNIMATCH_README}, as reported there"),
    Reference("ACDC", 3, "unimatch", 88.9, _UNIMATCH_README),
    Reference("ACDC", 7, "unimatch", 89.9, _UNIMATCH_README),
)
#: The layouts whose fixed lists define the benchmarks the figures were measured on.
BENCHMARKS = {"la2018-h5": "LA", "acdc-h5": "ACDC"}
_UNITS = {"LA": "labelled volumes", "ACDC": "labelled patients"}
CAVEAT = ("Published figures come from other protocols, networks, training lengths and checkpoint choices "
          "(several of these papers report the best test checkpoint): context for the reproduced numbers, "
          "not a comparison tested here.")


def benchmark_point(spec_json: str) -> tuple[str, int] | None:
    """(benchmark, labelled budget) of a trial's spec, or None when it ran on no benchmark's lists."""
    try:
        spec = json.loads(spec_json)
    except (TypeError, ValueError):
        return None
    data, protocol = spec.get("data") or {}, spec.get("protocol") or {}
    benchmark = BENCHMARKS.get(str(data.get("layout")))
    if benchmark is None or protocol.get("split") != "lists":
        return None
    return benchmark, int(protocol.get("labelled_cases", 1))


def benchmark_points(trials: pd.DataFrame | None) -> set[tuple[str, int]]:
    """Every (benchmark, labelled budget) the trials ran (none for trials without ``spec_json``)."""
    if trials is None or "spec_json" not in trials:
        return set()
    return {p for p in map(benchmark_point, trials["spec_json"]) if p is not None}


def reproduced_dice(trials: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark, budget and method: the mean over trials of each trial's mean per-case Dice
    (percent; for C > 2 the cases table's Dice is already the mean over foreground classes),
    its standard deviation over trials and the number of trials."""
    columns = ["benchmark", "budget", "method", "reproduced", "reproduced_sd", "n_trials"]
    done = trials[trials["status"] == "completed"] if "status" in trials else trials
    points = {str(t): benchmark_point(j) for t, j in zip(done["trial_id"], done["spec_json"], strict=True)}
    points = {t: p for t, p in points.items() if p is not None}
    if not points or cases is None or cases.empty:
        return pd.DataFrame(columns=columns)
    per_trial = cases.assign(trial_id=cases["trial_id"].astype(str)).groupby("trial_id")["dice"].mean()
    methods = dict(zip(done["trial_id"].astype(str), done["method"].astype(str), strict=True))
    rows = [{"benchmark": points[t][0], "budget": points[t][1], "method": methods[t], "dice": 100 * float(v)}
            for t, v in per_trial.items() if t in points]
    if not rows:
        return pd.DataFrame(columns=columns)
    grouped = pd.DataFrame(rows).groupby(["benchmark", "budget", "method"])["dice"]
    out = grouped.agg(reproduced="mean", reproduced_sd="std", n_trials="count").reset_index()
    return out[columns]


def benchmark_table(trials: pd.DataFrame | None, cases: pd.DataFrame | None) -> Table | None:
    """Published (cited) figures beside this study's reproduced Dice, for every benchmark and
    budget the study ran; None when it ran on no benchmark's lists."""
    points = benchmark_points(trials)
    if trials is None or not points:
        return None
    reproduced = reproduced_dice(trials, cases if cases is not None else pd.DataFrame())
    published = pd.DataFrame([vars(r) for r in BENCHMARK_FIGURES if (r.benchmark, r.budget) in points],
                              columns=["benchmark", "budget", "method", "dice", "source"])
    merged = published.rename(columns={"dice": "published"}).merge(
        reproduced, on=["benchmark", "budget", "method"], how="outer")
    merged = merged.sort_values(["benchmark", "budget", "method"], kind="stable").reset_index(drop=True)
    rows = [_benchmark_cells(r) for r in merged.to_dict("records")]
    notes = [CAVEAT, "Reproduced here: the mean over this study's trials (seeds, label draws) of each trial's "
             "mean per-test-case Dice (for ACDC the mean over RV, Myo and LV), its SD over trials and the number "
             "of trials (n). Published: the cited paper's or repository's figure, as printed."]
    header = ["benchmark", "labelled", "method", "published (cited) Dice %", "source", "reproduced here Dice %"]
    return Table("published_benchmarks", "Published (cited) benchmark figures beside the reproduced ones", header,
                 rows, merged, notes)


def _benchmark_cells(row: dict[str, Any]) -> list[Cell]:
    published, reproduced = row.get("published"), row.get("reproduced")
    has_pub = published is not None and pd.notna(published)
    has_rep = reproduced is not None and pd.notna(reproduced)
    sd = row.get("reproduced_sd")
    spread = f" \u00b1 {sd:.2f}" if sd is not None and pd.notna(sd) else ""
    rep_text = f"{reproduced:.2f}{spread} (n = {int(row['n_trials'])})" if has_rep else "\u2014"
    return [Cell(str(row["benchmark"])), Cell(f"{int(row['budget'])} {_UNITS[str(row['benchmark'])]}"),
            Cell(str(row["method"])), Cell(f"{published:.2f}" if has_pub else "\u2014", missing=not has_pub),
            Cell(str(row["source"]) if has_pub else "\u2014"), Cell(rep_text, missing=not has_rep)]
