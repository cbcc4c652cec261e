"""`mismatch study status`: done / running / failed / pending trials of a study, and an ETA."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

import pandas as pd

from mismatch.study.store import CorruptFile, TrialCheckpoint, corrupt_files, fused_members, read_table
from mismatch.study.trials import Study


def format_eta(seconds: float | None) -> str:
    """``1h02m``, ``4m10s`` or ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def estimate_eta(durations: list[float], remaining: int, parallel: int) -> float | None:
    """Remaining trials x median trial time / trials running at once (None before any finished)."""
    if not durations or remaining <= 0:
        return 0.0 if remaining <= 0 else None
    return statistics.median(durations) * remaining / max(1, parallel)


@dataclass
class StudyStatus:
    """Counts of a study's trials by state, and the estimated time to finish."""

    done: int
    running: int
    failed: int
    pending: int
    eta_s: float | None
    failures: list[tuple[str, str]]
    corrupt: list[CorruptFile] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.done + self.running + self.failed + self.pending


def study_status(study: Study, storage: str, parallel: int | None = None) -> StudyStatus:
    """Classify every trial of the grid from the store; running = has a checkpoint, no row
    (a fused group's members: each one running while its group's checkpoint folder exists).

    A trial with a corrupt file (listed in ``corrupt``) is pending: ``study run`` moves the
    file to quarantine/ and runs the trial again.

    The ETA is the median stored trial time (a fused member's: its group's over the group's
    size) x (running + pending) / trials at once (by default, this machine's CPUs / CPUs per trial).
    """
    corrupt = corrupt_files(storage, study.name)
    broken = {c.trial_id for c in corrupt}
    rows = read_table(storage, study.name, "trials",
                      columns=["trial_id", "status", "error", "train_time_s", "fuse_size"], skip_corrupt=True)
    rows = rows[~rows["trial_id"].isin(broken)] if len(rows) else rows
    by_id = {r.trial_id: r for r in rows.itertuples()} if len(rows) else {}
    counts = {"done": 0, "running": 0, "failed": 0, "pending": 0}
    in_groups = fused_members(storage, study.name)  # members of fused groups under way (counted one by one)
    failures = []
    for spec in study.trials():
        tid = spec.trial_id()
        row = by_id.get(tid)
        if row is not None and row.status == "completed":
            counts["done"] += 1
        elif row is not None and row.status == "failed":
            counts["failed"] += 1
            failures.append((tid, str(row.error)))
        elif tid in in_groups or TrialCheckpoint(storage, study.name, tid).exists():
            counts["running"] += 1
        else:
            counts["pending"] += 1
    # a fused group's members trained at once: each member's share of the group's time
    times = (pd.to_numeric(rows["train_time_s"], errors="coerce") / rows["fuse_size"]).dropna() if len(rows) else []
    done_times = [float(t) for t in times]
    slots = parallel or max(1, int((os.cpu_count() or 1) // study.file.resources.cpu))
    eta = estimate_eta(done_times, counts["running"] + counts["pending"], slots)
    return StudyStatus(**counts, eta_s=eta, failures=failures, corrupt=corrupt)
