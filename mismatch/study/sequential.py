"""`mismatch study run FILE --until-decided`: seeds in rounds until every comparison is decided.

A group-sequential design (O'Brien and Fleming 1979) with the Lan-DeMets O'Brien-Fleming-type
alpha-spending function (Lan and DeMets 1983), :mod:`mismatch.stats.sequential`. The schedule
of looks is fixed before the first round: the study's own seeds, then one more seed per round
up to ``--max-seeds``; the information fraction of a look is its seeds over ``max_seeds``. After
each round the report's run-level test (exact paired sign-flip on the per-run means) is
compared with that look's nominal level, spent at alpha / (baselines per count) (Bonferroni:
valid under any dependence between comparisons). A comparison is decided when its p-value is at
or below the nominal level and the two-level interval of the difference lies on the same side
of zero; a decided comparison stays decided. Re-testing at 0.05 after every round would
inflate the false-positive rate (tests/stats/test_sequential.py measures both).

The state lives in ``<storage>/<study>/sequential.json`` (written atomically after every
round): a rerun resumes at the first unfinished round, `study status` and the report read it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import pyarrow.fs as pafs

from mismatch.config import SpecError
from mismatch.stats.runlevel import BETTER, WORSE
from mismatch.stats.sequential import plan_looks
from mismatch.study.store import _write_atomic, resolve
from mismatch.study.trials import Study

STATE = "sequential.json"
ALPHA = 0.05
PROCEDURE = ("group-sequential: Lan-DeMets O'Brien-Fleming-type alpha spending (two-sided 0.05), Bonferroni over "
             "the baselines of one count; exact paired sign-flip test on per-run means")


def schedule(initial: list[int], max_seeds: int) -> list[list[int]]:
    """The seeds of every round: ``initial``, then one new seed per round up to ``max_seeds``."""
    if max_seeds < len(initial):
        raise SpecError(f"--max-seeds {max_seeds} is below the study's {len(initial)} seeds (grid.seed)")
    seeds, rounds, nxt = list(initial), [list(initial)], 0
    while len(seeds) < max_seeds:
        while nxt in seeds:
            nxt += 1
        seeds = seeds + [nxt]
        rounds.append(list(seeds))
    return rounds


def state_path(storage: str, study: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of a study's ``sequential.json``."""
    fs, root = resolve(storage)
    return fs, f"{root}/{study}/{STATE}"


def read_state(storage: str, study: str) -> dict[str, Any] | None:
    """The study's sequential state, or None when it never ran ``--until-decided``."""
    fs, path = state_path(storage, study)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as handle:
        try:
            return json.loads(handle.read())
        except json.JSONDecodeError as err:
            raise SpecError(f"{path}: not a sequential state file ({err.msg}); move it aside to start over") from err


def write_state(storage: str, study: str, state: dict[str, Any]) -> None:
    """Write the state through a temporary sibling and a move (never half-written)."""
    fs, path = state_path(storage, study)
    _write_atomic(fs, path, json.dumps(state, indent=2).encode())


def new_state(rounds: list[list[int]], family: int) -> dict[str, Any]:
    """A fresh state: the fixed schedule of looks and their nominal levels."""
    looks = plan_looks([len(r) for r in rounds], alpha=ALPHA, family=family)
    return {"version": 1, "procedure": PROCEDURE, "alpha": ALPHA, "family": family, "max_seeds": len(rounds[-1]),
            "schedule": rounds, "nominal_alpha": [lk.nominal_alpha for lk in looks],
            "info": [lk.info for lk in looks], "rounds": [], "decided": {}, "stopped": None}


def check_resumable(state: dict[str, Any], rounds: list[list[int]], family: int) -> None:
    """A stored state must have been planned with the same schedule (changing it mid-way would
    invalidate the alpha already spent)."""
    if state.get("schedule") != rounds or state.get("family") != family:
        raise SpecError(f"{STATE} was planned with rounds {state.get('schedule')} and {state.get('family')} "
                        f"baselines; this run asks for {rounds} and {family}: keep --max-seeds and the grid, "
                        f"or move {STATE} aside to start a new sequential study")


@dataclass(frozen=True)
class Decision:
    """One comparison after one look."""

    key: str
    runs: int
    pvalue: float
    diff: float
    low: float
    high: float
    verdict: str | None


def decide(rows: list[dict[str, Any]], nominal: float) -> list[Decision]:
    """Each comparison's decision at a look with ``nominal`` level (None: not yet decided)."""
    out = []
    for r in rows:
        p, lo, hi = float(r["run_p"]), float(r["diff_ci_low"]), float(r["diff_ci_high"])
        crossed = bool(np.isfinite(p) and p <= nominal)
        verdict = BETTER if crossed and lo > 0 else WORSE if crossed and hi < 0 else None
        out.append(Decision(r["key"], int(r["runs"]), p, float(r["diff"]), lo, hi, verdict))
    return out


def comparisons(storage: str, study: str) -> list[dict[str, Any]]:
    """The report's run-level comparisons of the stored rows (all counts, all baselines)."""
    from mismatch.report.build import ReportOptions, make_context  # the report's readers: pandas, plotly
    from mismatch.report.load import load_study

    _, root = resolve(storage)
    ctx = make_context(load_study(f"{root}/{study}"), ReportOptions())
    frame = ctx.comparisons
    if frame is None or frame.empty:
        raise SpecError(f"{study}: no reference method and baseline with per-case rows to decide between")
    frame = frame.assign(key=[f"{ctx.design.axis}={v} {b}" for v, b in zip(frame[ctx.design.axis], frame["baseline"],
                                                                              strict=True)])
    return frame.to_dict("records")


def baselines_per_count(study: Study) -> int:
    """The family of one count: the study's methods other than the reference."""
    names = list(dict.fromkeys(s.method.name for s in study.trials()))
    return max(1, len(names) - 1)


def with_seeds(study: Study, seeds: list[int]) -> Study:
    """A copy of ``study`` whose grid runs ``seeds``."""
    out = copy.copy(study)
    out.file = study.file.model_copy(update={"grid": study.file.grid.model_copy(update={"seed": list(seeds)})})
    return out


def run_until_decided(study: Study, max_seeds: int | None, run: Any, stream: TextIO) -> int:
    """Run ``study`` in rounds of seeds until decided or ``max_seeds``; ``run(study)`` runs one
    round's trials and returns the CLI's exit code for it. Returns the exit code."""
    initial = list(study.file.grid.seed or [0])
    rounds = schedule(initial, max_seeds if max_seeds is not None else len(initial) + 3)
    family = baselines_per_count(study)
    state = read_state(study.storage, study.name)
    if state is None:
        state = new_state(rounds, family)
    else:
        check_resumable(state, rounds, family)
    if state["stopped"]:
        print(f"[{study.name}] sequential study already stopped ({state['stopped']}) after round "
              f"{len(state['rounds'])}; nothing to run", file=stream)
        return 0
    for index in range(len(state["rounds"]), len(rounds)):
        code = run(with_seeds(study, rounds[index]))
        if code != 0:
            print(f"[{study.name}] round {index + 1} did not complete (exit {code}); rerun to resume it", file=stream)
            return code
        _record_round(study, state, index, stream)
        if state["stopped"]:
            break
    return 0


def _record_round(study: Study, state: dict[str, Any], index: int, stream: TextIO) -> None:
    nominal = float(state["nominal_alpha"][index])
    decisions = decide(comparisons(study.storage, study.name), nominal)
    for d in decisions:
        if d.verdict and d.key not in state["decided"]:
            state["decided"][d.key] = {"verdict": d.verdict, "round": index + 1, "p": d.pvalue, "nominal_alpha": nominal}
    state["rounds"].append({"round": index + 1, "seeds": state["schedule"][index], "nominal_alpha": nominal,
                            "comparisons": [d.__dict__ for d in decisions]})
    open_keys = [d.key for d in decisions if d.key not in state["decided"]]
    last = index + 1 == len(state["schedule"])
    state["stopped"] = "decided" if not open_keys else "budget" if last else None
    write_state(study.storage, study.name, state)
    print(round_line(study.name, state, index, open_keys), file=stream)


def round_line(name: str, state: dict[str, Any], index: int, open_keys: list[str]) -> str:
    """One line per finished round: its seeds, its nominal level, what is decided."""
    decided = ", ".join(f"{k}: {v['verdict']} (round {v['round']})" for k, v in state["decided"].items()) or "none"
    tail = {"decided": "every comparison decided: stop",
            "budget": f"max seeds reached: {', '.join(open_keys)} not separated"}.get(state["stopped"] or "",
                                                                                     f"{len(open_keys)} open: next round")
    return (f"[{name}] round {index + 1}/{len(state['schedule'])} (seeds {state['schedule'][index]}, nominal level "
            f"{state['nominal_alpha'][index]:.4g}): decided {decided}; {tail}")


def current_round(state: dict[str, Any]) -> list[int]:
    """The seeds of the round in progress, or of the last round when the study stopped."""
    done = len(state["rounds"])
    index = done - 1 if state["stopped"] or done == len(state["schedule"]) else done
    return list(state["schedule"][max(index, 0)])


def status_line(state: dict[str, Any]) -> str:
    """`study status`'s line about the rounds."""
    done, total = len(state["rounds"]), len(state["schedule"])
    stopped = f"; stopped: {state['stopped']}" if state["stopped"] else ""
    return (f"  sequential: round {done} of {total} done (max seeds {state['max_seeds']}); "
            f"{len(state['decided'])} decided{stopped}")
