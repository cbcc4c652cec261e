"""Checking a raw dataset before anything is trained on it: every problem, each with its file.

:func:`check_dataset` reads every case of a dataset in a registered layout and collects
ALL problems (not just the first) as :class:`Problem` ``(path, message)`` pairs:

- the dataset folder, its sub-folders or ``dataset.json`` missing or unreadable; no cases;
- missing or unpaired files (an image without a label, a label without an image, a
  MetaImage data file that no header names, a channel file ``dataset.json`` does not declare);
- unreadable, corrupt or truncated files (bad gzip streams, short ``.raw`` files, ...);
- channels whose shape or affine differ from the first channel; a label whose shape or
  affine differ from the image; a wrong number of channels;
- NaN or infinite intensities;
- label values that are not non-negative integers, or not among the values allowed;
- cases whose label has no foreground voxel (unless ``allow_empty``).

``mismatch data check`` prints the problems; ``mismatch data prepare`` runs the same
checks while it prepares (one pass over the files) and writes nothing when any fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mismatch.data.errors import DataError, FileProblemError
from mismatch.data.layouts import Layout, get_layout
from mismatch.data.volumes import Case, read_case


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file (or folder) of a dataset."""

    path: Path
    message: str
    case: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: the cases listed and every problem."""

    root: Path
    layout: str
    cases: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad_cases(self) -> list[str]:
        """Cases with at least one problem, sorted."""
        return sorted({p.case for p in self.problems if p.case is not None})


OnCase = Callable[[Case], None]
Progress = Callable[[int, int, str], None]


def check_dataset(
    layout: str | Layout,
    root: str | Path,
    *,
    label_values: Sequence[int] | None = None,
    foreground_labels: Sequence[int] | None = None,
    allow_empty: bool = False,
    on_case: OnCase | None = None,
    progress: Progress | None = None,
) -> CheckReport:
    """Check every case of the dataset at ``root``; see the module docstring for what is checked.

    ``label_values``: the label values allowed (default: the layout's: ``dataset.json``
    for msd, {0, 1, 2} for carve14, {0, 1, 2, 4} for brats2018). ``foreground_labels``:
    what counts as foreground for the empty-label check (default: any non-zero value).
    ``on_case(case)`` is called with every case that has no problem, while it is in
    memory (how ``prepare`` makes one pass); a :class:`DataError` it raises becomes a
    problem of that case. ``progress(i, n, case_id)`` is called before each case.
    """
    layout = get_layout(layout) if isinstance(layout, str) else layout
    root = Path(root).expanduser()
    report = CheckReport(root=root, layout=layout.name)
    if not root.is_dir():
        report.problems.append(Problem(root, "dataset folder not found"))
        return report
    try:
        report.cases = layout.list_cases(root)
        allowed = label_values if label_values is not None else layout.label_values(root)
        channels = layout.channel_names(root)
        report.problems += [Problem(path, msg) for path, msg in layout.stray_files(root, report.cases)]
    except DataError as err:
        report.problems.append(_as_problem(err, root))
        return report
    if not report.cases:
        report.problems.append(Problem(root, f"no cases found (the {layout.name} layout: {layout.description})"))
    for i, case_id in enumerate(report.cases):
        if progress is not None:
            progress(i, len(report.cases), case_id)
        report.problems += _check_case(layout, root, case_id, channels, allowed, foreground_labels, allow_empty,
                                       on_case)
    return report


def _check_case(
    layout: Layout,
    root: Path,
    case_id: str,
    channels: Sequence[str],
    allowed: Sequence[int] | None,
    foreground_labels: Sequence[int] | None,
    allow_empty: bool,
    on_case: OnCase | None,
) -> list[Problem]:
    try:
        sources = layout.sources(root, case_id)
    except DataError as err:
        return [_as_problem(err, root, case_id)]
    found, case = read_case(case_id, sources, channels, allowed)
    problems = [Problem(path, msg, case_id) for path, msg in found]
    if case is None:
        return problems
    if not allow_empty and not _has_foreground(case.label, foreground_labels):
        which = f"labels {sorted(foreground_labels)}" if foreground_labels is not None else "non-zero labels"
        return [Problem(sources.label, f"empty label: no foreground voxel ({which})", case_id)]
    if on_case is not None:
        try:
            on_case(case)
        except DataError as err:
            return [_as_problem(err, sources.images[0], case_id)]
    return []


def _has_foreground(label: np.ndarray, foreground_labels: Sequence[int] | None) -> bool:
    if foreground_labels is None:
        return bool(label.any())
    return bool(np.isin(label, np.asarray(foreground_labels)).any())


def _as_problem(err: DataError, default: Path, case: str | None = None) -> Problem:
    if isinstance(err, FileProblemError):
        return Problem(Path(str(err.path)), err.problem, case)
    return Problem(default, str(err), case)
