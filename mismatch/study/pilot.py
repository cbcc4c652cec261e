"""What a pilot study measured, for the planner: trial times, variance components, run-level SDs.

A pilot is any stored study folder (a smoke profile, two seeds of the real study): its rows go
through the report's own readers and statistics (:mod:`mismatch.report`), so the SD the planner
sizes a study with is the SD the report will test with.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mismatch.config import SpecError
from mismatch.report.build import ReportOptions, make_context
from mismatch.report.load import NotAStudyError, load_study
from mismatch.report.runs import components_frame


@dataclass
class PilotFacts:
    """Per method: median trial hours and epochs; per comparison: the SD of paired run differences."""

    folder: str
    trial_hours: dict[str, float]
    epochs: dict[str, float]
    components: pd.DataFrame
    sds: pd.DataFrame
    """Columns ``count`` ("axis=value"), ``baseline`` (method), ``sd``, ``runs``."""

    def sd_for(self, count: str, baseline: str) -> tuple[float, str]:
        """The SD for a planned comparison: same count and baseline, else pooled (said so)."""
        mine = self.sds[(self.sds["baseline"] == baseline) & np.isfinite(self.sds["sd"])]
        same = mine[[c in _parts(count) for c in mine["count"]]]
        for frame, how in ((same, f"pilot, {baseline} at the same count"), (mine, f"pilot, {baseline} pooled over counts"),
                           (self.sds[np.isfinite(self.sds["sd"])], "pilot, pooled over baselines and counts")):
            if len(frame):
                pooled = math.sqrt(float(np.average(frame["sd"] ** 2, weights=frame["runs"] - 1)))
                return pooled, f"{how}, {int(frame['runs'].sum())} paired runs"
        return float("nan"), "the pilot has fewer than two paired runs"


def _parts(count: str) -> list[str]:
    return [p.strip() for p in count.split(",")]


def read_pilot(folder: str, reference: str) -> PilotFacts:
    """Read a pilot study folder (its trials and per-case rows)."""
    try:
        data = load_study(folder)
    except (FileNotFoundError, NotAStudyError) as err:
        raise SpecError(f"--pilot {folder}: {err}") from err
    ctx = make_context(data, ReportOptions(reference=reference))
    if ctx.units is None or ctx.comparisons is None or ctx.comparisons.empty:
        raise SpecError(f"--pilot {folder}: no per-case rows of {reference} and a baseline to measure variances from")
    d = ctx.design
    comps = ctx.comparisons
    sds = pd.DataFrame({"count": [f"{d.axis}={v}" for v in comps[d.axis]],
                        "baseline": [_method_of(d, k) for k in comps["baseline"]],
                        "sd": comps["run_diff_sd"].astype(float), "runs": comps["runs"].astype(int)})
    parts = []
    for value in d.axis_values:
        frame = components_frame(ctx.units, d, value)
        parts.append(frame.assign(count=f"{d.axis}={value}"))
    hours, epochs = _times(data.trials)
    return PilotFacts(folder, hours, epochs, pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(), sds)


def _method_of(design: object, key: str) -> str:
    for col in design.columns:  # type: ignore[attr-defined]
        if col.key == key:
            return col.method
    return key


def _times(trials: pd.DataFrame | None) -> tuple[dict[str, float], dict[str, float]]:
    if trials is None or "train_time_s" not in trials:
        return {}, {}
    done = trials[trials["status"] == "completed"].copy()
    done["epochs"] = [json.loads(s).get("train", {}).get("epochs", math.nan) if isinstance(s, str) else math.nan
                      for s in done.get("spec_json", pd.Series([None] * len(done), index=done.index))]
    hours = (done.groupby("method")["train_time_s"].median() / 3600).to_dict()
    return {str(k): float(v) for k, v in hours.items()}, {str(k): float(v) for k, v in
                                                           done.groupby("method")["epochs"].median().items()}
