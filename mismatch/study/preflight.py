"""The data check a study driver runs before Ray starts: every problem the plan makes knowable.

A trial whose dataset root is missing, or whose split cannot be made (too few cases for its
labelled, unlabelled, validation and test counts, a fold out of range, a fixed list naming
absent cases), would fail on a Ray worker with a :class:`~mismatch.data.errors.DataError`
and be stored as failed for good. :func:`check_plan_data` finds those errors on the driver
with the checks the trial itself runs (:func:`~mismatch.data.trial_data.dataset_root`,
:func:`~mismatch.data.trial_data.open_source` for a prepared cache, the layout's case list,
:func:`~mismatch.data.trial_data.split_lists`, :func:`~mismatch.data.splits.trial_splits` and
:func:`~mismatch.data.splits.check_splits`), reading only folder listings, list files and
a prepared cache's manifest, never the volumes. Every problem is collected, one line per
distinct problem with the study file's key (and line) and how many trials it stops.

Not checked here (a worker still reports them): a raw dataset's pinned ``data.fingerprint``
(it hashes every file), labelled slice counts (they read every label), phantoms (generated
on demand; only their splits are checked, from the phantom's case count).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mismatch.config import DataSpec, TrialSpec
from mismatch.data.errors import DataError
from mismatch.data.layouts import get_layout
from mismatch.data.splits import CaseLists, check_splits, trial_splits
from mismatch.data.trial_data import dataset_root, open_source, split_lists

if TYPE_CHECKING:
    from mismatch.study.trials import Study

__all__ = ["PlanDataError", "check_plan_data", "plan_data_problems"]

KeyPath = tuple[str, ...]


class PlanDataError(DataError):
    """Trials of a study cannot run on their data; raised before anything starts. The
    message lists every problem, one line each (the CLI prints it and exits 2)."""


@dataclass(frozen=True)
class _Source:
    """What the split of a trial needs from its data: the case ids and the fixed lists."""

    cases: tuple[str, ...]
    lists: CaseLists | None


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
    if data.prepared is not None:
        source = open_source(data, cache_dir)  # the manifest: recipe and pinned fingerprint checked
        return _Source(tuple(source.cases), split_lists(data, source.root) if spec.protocol.split == "lists" else None)
    root = dataset_root(data, cache_dir)
    cases = get_layout(data.layout).list_cases(root)
    if not cases:
        raise DataError(f"no cases found in {root}")
    return _Source(tuple(cases), split_lists(data, root) if spec.protocol.split == "lists" else None)


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
    except DataError as err:
        return f"{_protocol_text(spec)}: {err}"
    return None


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
