"""The data check a study driver runs before Ray starts: every problem the plan makes knowable.

A trial whose dataset root is missing, whose pinned fingerprint differs from its data's, or
whose split cannot be made (too few cases for its labelled, unlabelled, validation and test
counts, a fold out of range, a fixed list naming absent cases, fewer qualifying slices in
its labelled cases than ``labelled_slices``) would fail on a Ray worker with a
:class:`~mismatch.data.errors.DataError` and be stored as failed for good.
:func:`check_plan_data` finds those errors on the driver with the checks the trial itself
runs (:func:`~mismatch.data.trial_data.open_source`, the layout's case list,
:func:`~mismatch.data.trial_data.split_lists`, :func:`~mismatch.data.splits.trial_splits`,
:func:`~mismatch.data.splits.check_splits`, :func:`~mismatch.data.selection.select_labelled`).
Every problem is collected, one line per distinct problem with the study file's key (and
line) and how many trials it stops.

What it reads: folder listings, list files, a prepared cache's manifest, the labels of the
labelled cases of each fold (2D trials with ``labelled_slices``; a few volumes), and, only
where ``data.fingerprint`` is pinned on raw data, every file once to hash it (each worker
hashes it too, so a pinned study spends one more pass before it starts).

Not checked here (a worker still reports them): the ``unlabelled_slices`` cap on raw data
(it reads every unlabelled label; on a prepared cache it is checked from the manifest), and
a phantom's slice counts (phantoms are generated on demand; only their splits are checked,
from the phantom's case count).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mismatch.config import DataSpec, TrialSpec
from mismatch.data.errors import DataError
from mismatch.data.selection import select_labelled, select_unlabelled
from mismatch.data.splits import CaseLists, Splits, check_splits, trial_splits
from mismatch.data.trial_data import PreparedSource, SliceSource, open_source, split_lists

if TYPE_CHECKING:
    from mismatch.study.trials import Study

__all__ = ["PlanDataError", "check_plan_data", "plan_data_problems"]

KeyPath = tuple[str, ...]


class PlanDataError(DataError):
    """Trials of a study cannot run on their data; raised before anything starts. The
    message lists every problem, one line each (the CLI prints it and exits 2)."""


@dataclass
class _Source:
    """What the split of a trial needs from its data: the case ids and the fixed lists, and
    the opened source (None for a phantom) whose qualifying slices are read once per case."""

    cases: tuple[str, ...]
    lists: CaseLists | None
    source: SliceSource | None = None
    seen: dict[str, np.ndarray] = field(default_factory=dict)

    def qualifying(self, cases: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The qualifying slice indices of ``cases`` (labels read at most once per case)."""
        assert self.source is not None
        todo = [c for c in cases if c not in self.seen]
        if todo:
            self.seen.update(self.source.qualifying(todo)[0])
        return {c: self.seen[c] for c in cases}


def _data_key(data: DataSpec) -> KeyPath:
    """The study-file key that names the trial's data."""
    if data.prepared is not None:
        return ("base", "data", "prepared")
    if data.synthetic is not None:
        return ("base", "data", "synthetic")
    return ("base", "data", "root")


def _open(spec: TrialSpec, cache_dir: Path | None) -> _Source:
    """The trial's cases (and fixed lists) as its worker would find them; raises DataError."""
    data = spec.data
    if data.synthetic is not None:  # generated on demand: only the case count matters to a split
        cases = tuple(f"{data.synthetic.kind}_{i:03d}" for i in range(data.synthetic.cases))
        lists = split_lists(data, Path()) if spec.protocol.split == "lists" else None  # raises: no lists
        return _Source(cases, lists)
    # A prepared cache: its manifest (recipe and pinned fingerprint). Raw data: its case list;
    # its files are hashed only when a fingerprint is pinned (the source's fingerprint is lazy).
    source = open_source(data, cache_dir)
    lists = split_lists(data, source.root) if spec.protocol.split == "lists" else None
    return _Source(tuple(source.cases), lists, source)


def _protocol_text(spec: TrialSpec) -> str:
    p = spec.protocol
    return f"fold {p.fold}, {p.labelled_cases} labelled case(s)"


def plan_data_problems(specs: list[TrialSpec], cache_dir: Path | None = None) -> list[tuple[KeyPath, str, int]]:
    """Every distinct data problem of ``specs``: (study-file key, message, trials it stops),
    in the order first met. Each dataset is opened once; each split protocol checked once."""
    sources: dict[str, _Source | DataError] = {}
    splits_seen: dict[tuple[str, str], str | None] = {}
    found: dict[tuple[KeyPath, str], int] = {}
    for spec in specs:
        data_json = spec.data.model_dump_json()
        if data_json not in sources:
            try:
                sources[data_json] = _open(spec, cache_dir)
            except DataError as err:
                sources[data_json] = err
        source = sources[data_json]
        if isinstance(source, DataError):
            problem: tuple[KeyPath, str] | None = (_data_key(spec.data), str(source))
        else:
            split_key = (data_json, json.dumps(spec.protocol.model_dump(mode="json"), sort_keys=True))
            if split_key not in splits_seen:
                splits_seen[split_key] = _split_problem(spec, source)
            message = splits_seen[split_key]
            problem = (("base", "protocol"), message) if message else None
        if problem is not None:
            found[problem] = found.get(problem, 0) + 1
    return [(key, message, count) for (key, message), count in found.items()]


def _split_problem(spec: TrialSpec, source: _Source) -> str | None:
    try:
        splits = trial_splits(source.cases, spec.protocol, source.lists)
        check_splits(splits, source.cases)
        _check_slices(spec, source, splits)
    except DataError as err:
        return f"{_protocol_text(spec)}: {err}"
    return None


def _check_slices(spec: TrialSpec, source: _Source, splits: Splits) -> None:
    """The slice counts a 2D trial draws from its split, as the trial's own selection checks them:
    ``labelled_slices`` from the labelled cases' labels; ``unlabelled_slices`` only from a prepared
    cache's manifest (on raw data it would read every unlabelled label)."""
    protocol = spec.protocol
    if spec.data.spatial_dims != 2 or source.source is None:
        return
    if protocol.labelled_slices is not None:
        labelled = tuple(splits["labelled"])
        select_labelled(source.qualifying(labelled), labelled, protocol.labelled_slices)
    if protocol.unlabelled_slices is not None and isinstance(source.source, PreparedSource):
        unlabelled = tuple(splits["unlabelled"])
        select_unlabelled(source.qualifying(unlabelled), unlabelled, protocol.unlabelled_slices,
                          np.random.default_rng(0))  # only the count is checked; the draw is the worker's


def check_plan_data(study: Study, specs: list[TrialSpec], cache_dir: Path | None = None) -> None:
    """Raise :class:`PlanDataError` listing every data problem of ``specs`` (trials of
    ``study``), each at its key in the study file; return quietly when there is none."""
    problems = plan_data_problems(specs, cache_dir)
    if not problems:
        return
    stopped = sum(n for _, _, n in problems)
    lines = [study.lines.problem(key, f"{message} ({n} trial{'s' if n != 1 else ''})") for key, message, n in problems]
    raise PlanDataError(f"{stopped} of the {len(specs)} trials to run in {study.source} cannot run on their data; "
                        "nothing was started:\n" + "\n".join(lines))
