"""A sequential study's verdicts (``sequential.json``, written by `study run --until-decided`).

After optional stopping the fixed-sample p-value of the final look is no longer a valid test:
the verdicts of a sequential study are the group-sequential boundary crossings recorded round
by round (Lan-DeMets O'Brien-Fleming-type spending; :mod:`mismatch.study.sequential`).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from mismatch.report.load import StudyData
from mismatch.stats.runlevel import NOT_SEPARATED

STATE = "sequential.json"


def read_sequential(data: StudyData) -> dict[str, Any] | None:
    """The study folder's sequential state, or None."""
    if data.base is None:
        return None
    path = f"{data.base}/{STATE}"
    if data.fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with data.fs.open_input_stream(path) as handle:
        return json.loads(handle.read())


def apply_sequential(frame: pd.DataFrame, state: dict[str, Any], axis: str) -> pd.DataFrame:
    """``frame`` with each verdict replaced by its sequential decision (undecided: not separated)."""
    keys = [f"{axis}={v} {b}" for v, b in zip(frame[axis], frame["baseline"], strict=True)]
    decided = state.get("decided", {})
    verdicts = [decided[k]["verdict"] if k in decided else NOT_SEPARATED for k in keys]
    how = [f"round {decided[k]['round']}: p {decided[k]['p']:.4g} <= nominal {decided[k]['nominal_alpha']:.4g}"
           if k in decided else "not decided" for k in keys]
    return frame.assign(verdict=verdicts, sequential=how)


def sequential_note(state: dict[str, Any]) -> str:
    """What the page says about a sequential study's verdicts."""
    rounds = len(state.get("rounds", []))
    levels = ", ".join(f"{a:.4g}" for a in state.get("nominal_alpha", []))
    return (f"Sequential study ({state.get('procedure', '')}): {rounds} of {len(state.get('schedule', []))} planned "
            f"rounds run, stopped: {state.get('stopped') or 'not yet'}; nominal levels per round {levels}. The "
            "verdicts are the recorded boundary crossings (a p-value at or below its round's nominal level with the "
            "interval on the same side), not the fixed-sample p of the last round, which optional stopping makes "
            "too small.")
