"""Published reference figures, shown beside a study's own numbers, labelled with their source.

The paper's CARVE tables report what the authors' code called "IoU": the per-slice two-class
mean Dice (``mean_dice_2class`` here), mean over 10 folds, in percent. Source:
shared/reference/official-implementation.md ("Published reference numbers").

The semi-supervised benchmarks' figures (:data:`BENCHMARK_FIGURES`, issue 15): Dice in percent
on the 20 LA test volumes (8 / 16 labelled volumes of 80) and on ACDC's test patients (3 / 7
labelled patients; mean over RV, Myo and LV), each from its paper or its official repository.
:func:`benchmark_table` shows them beside what a study reproduced on the same benchmark and
budget (``protocol.split: lists``): they come from other protocols, networks and training
lengths, so they are context, never a comparison this study tests. Each figure carries the
checkpoint rule and HD95 units of its official code, with the file (and line) or issue they were
read from (issue 23), and the table says whether it is comparable with this tool's protocol:
final checkpoint, validation-only hyper-parameter selection, HD95 at the data's spacing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mismatch.report.table_format import Cell, Table, fmt_small

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


#: A published figure's checkpoint rule, as its official code keeps the reported checkpoint.
SELECTION_RULES = ("final checkpoint", "best on validation", "best on test", "best on validation+test merged",
                   "not verified")
#: The units of the HD95 that the figure's code computes (the table shows Dice, always in percent).
HD95_UNITS = ("mm", "voxels", "not reported", "not verified")
#: This tool's HD95 units per benchmark: la2018-h5 reads LA at 0.625 mm isotropic; acdc-h5 stores no
#: spacing, so ACDC volumes are read with 1 mm voxels and distances are in voxels (mismatch.data.h5layouts).
OWN_HD95_UNITS = {"LA": "mm", "ACDC": "voxels"}


@dataclass(frozen=True)
class Reference:
    """One published Dice (percent) on a benchmark at a labelled budget, with its source and protocol.

    ``budget`` counts labelled volumes (LA) or patients (ACDC); ``method`` is the registry name
    when this project has the method (so reproduced rows line up), else the paper's name.
    ``selection`` (one of :data:`SELECTION_RULES`) is how the official code picks the reported
    checkpoint and ``hd95_units`` (one of :data:`HD95_UNITS`) the units of its HD95, each read
    from the file or issue named in ``selection_source`` / ``units_source``."""

    benchmark: str
    budget: int
    method: str
    dice: float
    source: str
    selection: str
    selection_source: str
    hd95_units: str
    units_source: str
    dice_units: str = "%"


_MC_NET = "Wu et al., MC-Net, MICCAI 2021, Table 1 (LA, 10% / 20% labelled)"
_UNIMATCH_README = "UniMatch repository (LiheYoung/UniMatch), more-scenarios/medical/README.md, ACDC table"
_UAMT = ("not verified", "not verified: MC-Net's re-run of UA-MT; ycwu1997/MC-Net holds no UA-MT code "
         "(its own MC-Net code keeps the best test checkpoint)",
         "not verified", "not verified: the re-run's evaluation code is not published")
_UAMT_LA = ("final checkpoint", "yulequan/UA-MT code/test_LA.py l.28, 41 test iter_6000.pth, the last iteration "
            "(code/train_LA_meanteacher_certainty_unlabel.py l.28: max_iterations 6000)",
            "voxels", "yulequan/UA-MT code/test_util.py l.113: medpy metric.binary.hd95(pred, gt), no voxelspacing")
_MC_NET_PROTOCOL = ("best on test", "ycwu1997/MC-Net code/train_mcnet_3d.py l.206-214 keep the best Dice of "
                    "var_all_case, which reads test.list (code/utils/test_patch.py l.19); code/test_3d.py l.45 "
                    "tests that best_model.pth",
                    "voxels", "ycwu1997/MC-Net code/utils/test_patch.py l.236: medpy hd95, no voxelspacing")
_BCP_LA = ("best on test", "DeepMed-Lab-ECNU/BCP code/LA_BCP_train.py l.175-181 (pre-training) and l.280-288 "
           "(self-training) keep the best Dice of var_all_case_LA, which reads test.list "
           "(code/utils/test_3d_patch.py l.22); maintainers confirm in issue #19 (as in earlier LA work)",
           "voxels", "DeepMed-Lab-ECNU/BCP code/utils/test_3d_patch.py l.272: medpy hd95, no voxelspacing")
_UAMT_ACDC = ("not verified", "not verified: LiheYoung/UniMatch more-scenarios/medical/README.md reports these "
              "UA-MT figures without their protocol or code",
              "not reported", "more-scenarios/medical/README.md: the ACDC table has Dice only")


def _unimatch(log: str, best: float, last: float) -> tuple[str, str, str, str]:
    """UniMatch's ACDC protocol, with the training log that shows the best and the last epoch."""
    return ("best on validation+test merged",
            "LiheYoung/UniMatch more-scenarios/medical/dataset/acdc.py l.32 (mode 'val' reads "
            "splits/acdc/valtest.txt), unimatch.py l.72 (valset) and l.242-253 (best.pth by that Dice); "
            f"confirmed in issue #100; training-logs/{log} l.4504: best {best:.2f}, last epoch (l.4517) {last:.2f}",
            "not reported", "more-scenarios/medical/unimatch.py l.207-240 evaluate Dice only")


BENCHMARK_FIGURES: tuple[Reference, ...] = (
    Reference("LA", 8, "ua-mt", 84.25, f"{_MC_NET}, UA-MT re-run", *_UAMT),
    Reference("LA", 16, "ua-mt", 88.88, "Yu et al., UA-MT, MICCAI 2019, Table 1 (LA, 16 labelled)", *_UAMT_LA),
    Reference("LA", 8, "MC-Net", 87.71, _MC_NET, *_MC_NET_PROTOCOL),
    Reference("LA", 16, "MC-Net", 90.34, _MC_NET, *_MC_NET_PROTOCOL),
    Reference("LA", 8, "bcp", 89.62, "Bai et al., BCP (Bidirectional Copy-Paste), CVPR 2023, LA table (8 labelled)",
              *_BCP_LA),
    Reference("ACDC", 3, "ua-mt", 61.0, f"{_UNIMATCH_README}, as reported there", *_UAMT_ACDC),
    Reference("ACDC", 7, "ua-mt", 81.5, f"{_UNIMATCH_README}, as reported there", *_UAMT_ACDC),
    Reference("ACDC", 3, "unimatch", 88.9, _UNIMATCH_README, *_unimatch("3cases.log", 88.86, 88.77)),
    Reference("ACDC", 7, "unimatch", 89.9, _UNIMATCH_README, *_unimatch("7cases.log", 89.85, 89.68)),
)
#: The layouts whose fixed lists define the benchmarks the figures were measured on.
BENCHMARKS = {"la2018-h5": "LA", "acdc-h5": "ACDC"}
_UNITS = {"LA": "labelled volumes", "ACDC": "labelled patients"}
CAVEAT = ("Published figures come from other protocols, networks, training lengths and checkpoint choices "
          "(several of these papers report the best test checkpoint): context for the reproduced numbers, "
          "not a comparison tested here.")
PROTOCOL_NOTE = (
    "This tool's protocol: no checkpoint is ever chosen on test data. A trial tests its final checkpoint "
    "(train.snapshot: final, as la_ssl and acdc_ssl run; the default last-k averages the last k snapshots, "
    "also a rule fixed before training), hyper-parameters are chosen on validation cases only (the study "
    "search's objective is validation IoU), and HD95 is in mm at the data's spacing (LA: 0.625 mm; acdc-h5 "
    "stores no spacing, so ACDC distances are in voxels, as SSL4MIS's). Why the final checkpoint: a "
    "checkpoint kept for its best test Dice is an optimistic, test-selected number, and Li and Qin (ICML "
    "2026, arXiv 2605.25561) find that semi-supervised 3D benchmarks without a validation set select on "
    "the test set; they recommend the final checkpoint under a multi-run protocol, which is what the seeds "
    "and runs of a study here give.")
COMPARABLE_NOTE = (
    "comparable?: \"no\" names what differs from this protocol (a checkpoint kept for its Dice on the "
    "test set, or on validation and test merged; a best-validation checkpoint; HD95 in other units); "
    "\"unknown\" where the official code does not show the rule (\"not verified\"). Selection rule and "
    "units come from the official code or issue named in the CSV's selection_source and units_source. "
    "Even a \"yes\" differs in network, training length and seeds.")


def comparability(ref: Reference) -> tuple[str, str]:
    """("yes" | "no" | "unknown", reason) of a published figure against this tool's protocol:
    final checkpoint, validation-only selection, HD95 in :data:`OWN_HD95_UNITS`."""
    if ref.selection not in SELECTION_RULES or ref.hd95_units not in HD95_UNITS:
        raise ValueError(f"{ref.method} on {ref.benchmark}: unknown selection {ref.selection!r} "
                         f"or HD95 units {ref.hd95_units!r}")
    reasons = {"best on test": "best checkpoint on the test set",
               "best on validation+test merged": "best checkpoint on validation and test merged",
               "best on validation": "best checkpoint on validation (here: the final one)"}
    hard = [reasons[ref.selection]] if ref.selection in reasons else []
    own = OWN_HD95_UNITS[ref.benchmark]
    if ref.hd95_units in ("mm", "voxels") and ref.hd95_units != own:
        hard.append(f"HD95 in {ref.hd95_units} (here {own})")
    if hard:
        return "no", "; ".join(hard)
    if ref.selection == "not verified":
        return "unknown", "selection rule not verified"
    return "yes", f"{ref.selection}; HD95 in {own} as here"


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


def published_frame(points: set[tuple[str, int]]) -> pd.DataFrame:
    """The published figures at ``points``, one row each, with their protocol fields and comparability."""
    rows = []
    for ref in BENCHMARK_FIGURES:
        if (ref.benchmark, ref.budget) in points:
            comparable, reason = comparability(ref)
            rows.append({**vars(ref), "comparable": comparable, "comparable_reason": reason})
    columns = [*Reference.__dataclass_fields__, "comparable", "comparable_reason"]
    return pd.DataFrame(rows, columns=columns).rename(columns={"dice": "published"})


def benchmark_table(trials: pd.DataFrame | None, cases: pd.DataFrame | None) -> Table | None:
    """Published (cited) figures, with their checkpoint rule, HD95 units and comparability, beside
    this study's reproduced Dice, for every benchmark and budget the study ran; None when it ran on
    no benchmark's lists."""
    points = benchmark_points(trials)
    if trials is None or not points:
        return None
    reproduced = reproduced_dice(trials, cases if cases is not None else pd.DataFrame())
    merged = published_frame(points).merge(reproduced, on=["benchmark", "budget", "method"], how="outer")
    merged = merged.sort_values(["benchmark", "budget", "method"], kind="stable").reset_index(drop=True)
    rows = [_benchmark_cells(r) for r in merged.to_dict("records")]
    notes = [CAVEAT, PROTOCOL_NOTE, COMPARABLE_NOTE,
             "Reproduced here: the mean over this study's trials (seeds, label draws) of each trial's "
             "mean per-test-case Dice (for ACDC the mean over RV, Myo and LV), its SD over trials and the number "
             "of trials (n). Published: the cited paper's or repository's figure, as printed."]
    header = ["benchmark", "labelled", "method", "published (cited) Dice %", "source", "selection rule",
              "HD95 units", "comparable?", "reproduced here Dice %"]
    return Table("published_benchmarks", "Published (cited) benchmark figures beside the reproduced ones", header,
                 rows, merged, notes)


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return str(value) if isinstance(value, str) else "\u2014"


def _benchmark_cells(row: dict[str, Any]) -> list[Cell]:
    published, reproduced = row.get("published"), row.get("reproduced")
    has_pub = published is not None and pd.notna(published)
    has_rep = reproduced is not None and pd.notna(reproduced)
    sd = row.get("reproduced_sd")
    spread = f" \u00b1 {sd:.2f}" if sd is not None and pd.notna(sd) else ""
    rep_text = f"{reproduced:.2f}{spread} (n = {int(row['n_trials'])})" if has_rep else "\u2014"
    source = (f"{row['source']}\nselection: {row['selection_source']}\nHD95: {row['units_source']}"
              if has_pub else "\u2014")
    comparable = f"{row['comparable']}: {row['comparable_reason']}" if has_pub else "\u2014"
    return [Cell(str(row["benchmark"])), Cell(f"{int(row['budget'])} {_UNITS[str(row['benchmark'])]}"),
            Cell(str(row["method"])), Cell(f"{published:.2f}" if has_pub else "\u2014", missing=not has_pub),
            Cell(source), Cell(_text(row, "selection")), Cell(_text(row, "hd95_units")), Cell(comparable),
            Cell(rep_text, missing=not has_rep)]
