"""`mismatch study plan`: size a study before it runs.

For the study's design (its trials, paired runs per comparison, the family of baselines) the
planner prints the device-hours each method will cost, the variance components a pilot
measured, the minimum detectable difference (MDD) at 80% power and Holm's strictest 5% level,
and how many seeds or folds reach a target MDD. Power is that of the report's own run-level
test (the exact paired sign-flip test, :mod:`mismatch.stats.power`), so a plan and the report
that follows it speak about the same test.

Without a pilot the SD of the paired run differences is unknown: the MDD is printed in units of
that SD, and the device-hours are an estimate from the bench's step times (labelled so).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mismatch.config import SpecError, TrialSpec
from mismatch.stats import power as pw
from mismatch.stats.runlevel import min_p_run_test
from mismatch.study.trials import Study

POWER = 0.8
ALPHA = 0.05
REFERENCE = "mismatch"
MAX_PAIRS = 256
BENCH_STEP_MS = {"sup1": 134.9, "sup-strong": 141.6, "bcp": 277.2, "mean-teacher": 282.0, "fixmatch": 307.2,
                 "mta": 346.5, "cct": 463.9, "cps": 467.7, "sup2": 541.4, "unimatch": 543.6, "ua-mt": 580.3,
                 "morph": 820.0, "mismatch": 1005.8}
"""CPU ms per training step at 176 x 176, width 24 (bench/bench_methods.py, docs/methods.md, 2026-11-29)."""
BENCH_PIXELS, BENCH_WIDTH = 176 * 176, 24


@dataclass
class Comparison:
    """One planned reference-vs-baseline comparison at one count."""

    count: str
    baseline: str
    pairs: int
    runs_per_seed: int
    folds: int
    seeds: int
    sd: float = float("nan")
    sd_source: str = ""
    mdd: float = float("nan")
    mdd_in_sd: float = float("nan")
    target_seeds: int | None = None
    target_folds: int | None = None


@dataclass
class Plan:
    """What a study will cost and what it can detect."""

    study: str
    trials: int
    per_method: dict[str, int]
    hours: dict[str, float]
    hours_source: str
    reference: str
    family: int
    comparisons: list[Comparison]
    components: pd.DataFrame | None = None
    pilot: str | None = None
    target_mdd: float | None = None
    notes: list[str] = field(default_factory=list)


def _count_key(spec: TrialSpec) -> str:
    p = spec.protocol
    parts = [f"labelled_slices={p.labelled_slices}" if p.labelled_slices is not None else
             f"labelled_cases={p.labelled_cases}"]
    if p.unlabelled_slices is not None:
        parts.append(f"unlabelled_slices={p.unlabelled_slices}")
    return ", ".join(parts)


def _run_key(spec: TrialSpec) -> tuple[int, int, int]:
    return spec.protocol.fold, spec.train.seed, spec.protocol.label_draw


def _reference(methods: list[str]) -> str:
    return REFERENCE if REFERENCE in methods else methods[0]


def design_comparisons(specs: list[TrialSpec]) -> tuple[str, int, list[Comparison]]:
    """The reference, the family size and the planned comparisons of a study's trials."""
    runs: dict[tuple[str, str], set[tuple[int, int, int]]] = defaultdict(set)
    for spec in specs:
        runs[(spec.method.name, _count_key(spec))].add(_run_key(spec))
    methods = list(dict.fromkeys(spec.method.name for spec in specs))
    ref = _reference(methods)
    baselines = [m for m in methods if m != ref]
    out = []
    for count in dict.fromkeys(_count_key(s) for s in specs):
        mine = runs.get((ref, count), set())
        for base in baselines:
            common = mine & runs.get((base, count), set())
            if not common:
                continue
            folds = len({k[0] for k in common})
            seeds = len({k[1] for k in common})
            per_seed = len({(k[0], k[2]) for k in common})
            out.append(Comparison(count, base, len(common), per_seed, folds, seeds))
    return ref, max(1, len(baselines)), out


def bench_hours(specs: list[TrialSpec]) -> dict[str, float]:
    """Estimated CPU hours per method from the bench's step times, scaled by pixels and width^2.

    Steps per epoch are the unlabelled slices of the two-stream protocol (synthetic data: cases x
    slices); a real dataset's pool is only known once it is read, so a pilot is the measurement.
    """
    hours: dict[str, float] = defaultdict(float)
    for spec in specs:
        if spec.data.spatial_dims == 3:  # the bench times 2D steps only: no honest 3D figure
            hours[spec.method.name] = math.nan
            continue
        steps = spec.train.epochs * _epoch_steps(spec)
        pixels = _pixels(spec)
        width = getattr(spec.method, "width", BENCH_WIDTH) or BENCH_WIDTH
        ms = BENCH_STEP_MS.get(spec.method.name, BENCH_STEP_MS[REFERENCE])
        hours[spec.method.name] += steps * ms * (pixels / BENCH_PIXELS) * (width / BENCH_WIDTH) ** 2 / 3.6e6
    return dict(hours)


def _epoch_steps(spec: TrialSpec) -> int:
    p, synth = spec.protocol, spec.data.synthetic
    if p.unlabelled_slices is not None:
        return max(1, p.unlabelled_slices)
    per_case = synth.slices if synth is not None else 100
    cases = p.unlabelled_cases if isinstance(p.unlabelled_cases, int) else 20
    return max(1, cases * per_case)


def _pixels(spec: TrialSpec) -> int:
    synth = spec.data.synthetic
    if synth is not None:
        return int(np.prod(synth.size[:2]))
    return spec.data.crop_size ** 2 if spec.data.crop != "none" else BENCH_PIXELS


def plan_study(study: Study, pilot: str | None = None, target_mdd: float | None = None) -> Plan:
    """The plan of ``study``; ``pilot`` a study folder whose rows give times and variances;
    ``target_mdd`` in points (percent of the metric)."""
    specs = study.trials()
    per_method = dict(Counter(s.method.name for s in specs))
    ref, family, comps = design_comparisons(specs)
    plan = Plan(study.name, len(specs), per_method, bench_hours(specs),
                "estimate from bench/bench_methods.py CPU step times (176x176, width 24), scaled by pixels and "
                "width^2, x epochs x unlabelled slices: no pilot measured it", ref, family, comps,
                target_mdd=target_mdd)
    if pilot is not None:
        from mismatch.study.pilot import read_pilot  # pandas and the report's readers, only with --pilot

        facts = read_pilot(pilot, ref)
        plan.pilot = facts.folder
        plan.components = facts.components
        measured = [m for m in per_method if m in facts.trial_hours]
        if measured:
            for m in measured:
                plan.hours[m] = per_method[m] * facts.trial_hours[m] * _epoch_ratio(specs, m, facts.epochs)
            rest = [m for m in per_method if m not in facts.trial_hours]
            plan.hours_source = (f"measured for {', '.join(measured)}: median train_time_s of the pilot's trials "
                                 f"({facts.folder}) x trials, scaled by the ratio of epochs"
                                 + (f"; {', '.join(rest)}: the bench estimate (not in the pilot)" if rest else ""))
        for comp in comps:
            comp.sd, comp.sd_source = facts.sd_for(comp.count, comp.baseline)
    for comp in comps:
        _size(comp, family, target_mdd)
    return plan


def _epoch_ratio(specs: list[TrialSpec], method: str, pilot_epochs: dict[str, float]) -> float:
    mine = [s.train.epochs for s in specs if s.method.name == method]
    before = pilot_epochs.get(method, math.nan)
    return float(np.median(mine)) / before if mine and np.isfinite(before) and before > 0 else 1.0


def _size(comp: Comparison, family: int, target: float | None) -> None:
    comp.mdd_in_sd = pw.mdd(1.0, comp.pairs, alpha=ALPHA, family=family, target=POWER)
    if not (np.isfinite(comp.sd) and comp.sd > 0):
        return
    comp.mdd = comp.mdd_in_sd * comp.sd
    if target is not None:
        need = pw.pairs_for(target / 100.0, comp.sd, alpha=ALPHA, family=family, target=POWER, max_pairs=MAX_PAIRS)
        if need is not None:
            comp.target_seeds = math.ceil(need / comp.runs_per_seed)
            comp.target_folds = math.ceil(need / max(1, comp.pairs // max(1, comp.folds)))


def check_target(value: float | None) -> None:
    """``--target-mdd`` must be a positive number of points."""
    if value is not None and not (np.isfinite(value) and value > 0):
        raise SpecError(f"--target-mdd must be a positive number of points (got {value})")


def _pts(x: float) -> str:
    if np.isnan(x):
        return "n/a"
    return f"{100 * x:.2f}" if np.isfinite(x) else "inf"


def format_plan(plan: Plan) -> str:
    """The plan as the lines `mismatch study plan` prints."""
    lines = [f"plan for {plan.study}: {plan.trials} trials; reference {plan.reference}, {plan.family} "
             f"baseline{'s' if plan.family != 1 else ''} (Holm's strictest level {ALPHA}/{plan.family} = "
             f"{ALPHA / plan.family:.4g})"]
    lines.append("  trials per method: " + ", ".join(f"{m} {n}" for m, n in plan.per_method.items()))
    if all(np.isnan(h) for h in plan.hours.values()):
        lines.append("  device-hours per method: unknown (3D trials: the bench times 2D steps only; run a pilot and "
                     "pass --pilot)")
    else:
        lines.append("  device-hours per method: " + ", ".join(f"{m} {h:.2f} h" for m, h in plan.hours.items())
                     + f" (total {np.nansum(list(plan.hours.values())):.2f} h; {plan.hours_source})")
    if plan.components is not None and len(plan.components):
        lines.append(f"  variance components (pilot {plan.pilot}; points; run share = share of one run's mean):")
        for _, r in plan.components.iterrows():
            if r["runs"] < 2:
                lines.append(f"    {r['count']}: {r['column']}: one run in the pilot: no run SD")
                continue
            share = f"{r['run_share']:.0%}" if np.isfinite(r["run_share"]) else "n/a"
            lines.append(f"    {r['count']}: {r['column']}: run SD {_pts(r['run_sd'])}, case SD {_pts(r['case_sd'])}, "
                         f"run share {share} ({r['runs']} runs, {r['cases_per_run']:.0f} cases/run)")
    lines += _comparison_lines(plan)
    if plan.pilot is None:
        lines.append("  no pilot: the SD of paired run differences is unknown, so the MDD is in units of it. Run a "
                     "pilot (e.g. this file's smoke profile, or 2 seeds) and pass --pilot <storage>/<study>.")
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def _comparison_lines(plan: Plan) -> list[str]:
    """One line per group of comparisons that share a count and every planned figure."""
    groups: dict[tuple[object, ...], list[Comparison]] = {}
    for c in plan.comparisons:
        key = (c.count, c.pairs, c.folds, c.seeds, c.runs_per_seed, round(c.sd, 6) if np.isfinite(c.sd) else None,
               c.sd_source, c.target_seeds, c.target_folds)
        groups.setdefault(key, []).append(c)
    return [_comparison_line(plan, cs[0], ", ".join(c.baseline for c in cs)) for cs in groups.values()]


def decidable_pairs(family: int) -> int:
    """Fewest paired runs whose floor 2 / 2^n passes Holm's strictest level 0.05 / family."""
    return math.floor(math.log2(2 * family / ALPHA)) + 1


def _comparison_line(plan: Plan, c: Comparison, baselines: str) -> str:
    floor = min_p_run_test(c.pairs)
    head = (f"  {plan.reference} vs {baselines} at {c.count}: {c.pairs} paired runs ({c.folds} fold"
            f"{'s' if c.folds != 1 else ''} x {c.seeds} seeds{' x label draws' if c.runs_per_seed > c.folds else ''}); "
            f"smallest reachable p {floor:.3g}")
    if not np.isfinite(c.mdd_in_sd):
        need = decidable_pairs(plan.family)
        return (head + f": can never pass {ALPHA / plan.family:.4g}: no verdict possible; needs >= {need} paired runs "
                f"(>= {math.ceil(need / c.runs_per_seed)} seeds per (fold, label draw))")
    if not np.isfinite(c.mdd):
        return head + f"; MDD = {c.mdd_in_sd:.2f} x SD of paired run differences (80% power)"
    text = (head + f"; SD of paired run differences {_pts(c.sd)} points ({c.sd_source}); MDD {_pts(c.mdd)} points "
            "(80% power, Holm 5%)")
    if plan.target_mdd is not None:
        if c.target_seeds is None:
            text += f"; target {plan.target_mdd:g} points: needs more than {MAX_PAIRS} paired runs"
        else:
            text += (f"; target {plan.target_mdd:g} points: {c.target_seeds} seeds per (fold, label draw) at "
                     f"{c.folds} folds, or {c.target_folds} folds at {c.seeds} seeds")
    return text


def pilot_path(pilot: str, study: Study) -> str:
    """``--pilot``: a study folder, or a storage holding this study's folder."""
    path = Path(pilot)
    if (path / "trials").is_dir() or not (path / study.name).is_dir():
        return pilot
    return str(path / study.name)
