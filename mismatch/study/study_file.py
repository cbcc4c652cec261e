"""A study file's typed model: its sections (methods, grid, resources, search, profiles), strict
loading with file lines, and the small helpers that read it. :mod:`mismatch.study.trials`
expands a loaded file into its trials. See docs/studies.md.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from mismatch.config import (
    KeyPath,
    SpecError,
    StrictModel,
)
from mismatch.tracking.config import Tracking, TrackingSpec

GRID_AXES = {
    "labelled_cases": "protocol.labelled_cases",
    "labelled_slices": "protocol.labelled_slices",
    "unlabelled_slices": "protocol.unlabelled_slices",
    "fold": "protocol.fold",
    "seed": "train.seed",
    "label_draw": "protocol.label_draw",
}


#: The most trials a study file may expand to unless it sets ``max_trials`` (a guard against a
#: few list-valued keys multiplying into billions of variants).
DEFAULT_MAX_TRIALS = 10_000


#: ``resources.fuse`` / ``--fuse``: at most this many trials per fused group, or ``auto``.
Fuse = Annotated[int, Field(ge=1)] | Literal["auto"]


class Resources(StrictModel):
    """Resources of one trial. ``gpu`` may be fractional (0.25 packs four trials on a GPU);
    where the cluster has no GPU, trials fall back to the CPU. ``fuse`` (default 1: one trial
    per process) trains up to that many compatible trials as one fused group, which is one
    Ray Tune trial with these resources; ``auto`` picks the size from memory (docs/studies.md).
    ``fuse_kernels`` says how a group steps: ``grouped`` (one vmapped step: a GPU's
    throughput), ``per-member`` (each member with its own kernels: rows equal to its trials
    alone) or ``auto`` (grouped on CUDA, per-member on a CPU)."""

    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)
    fuse: Fuse = 1
    fuse_kernels: Literal["auto", "grouped", "per-member"] = "auto"

    @field_validator("fuse", mode="before")
    @classmethod
    def _fuse(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"fuse must be an integer >= 1 or 'auto', not {value!r}")


def parse_fuse(text: str) -> int | Literal["auto"]:
    """``--fuse K|auto`` as :class:`Resources` takes it; ``ValueError`` with a one-line message."""
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--fuse must be an integer >= 1 or 'auto', not {text!r}")
    return value


class Grid(StrictModel):
    """Grid axes crossed with every method variant; ``fold: all`` means every fold.

    ``label_draw`` (default ``[0]``, the paper's labels) repeats each trial with other
    labelled cases and first labelled slices (``protocol.label_draw``). ``labelled_cases``
    is the labelled budget in cases (patients for ACDC), e.g. ``[8, 16]`` under ``la-8``."""

    labelled_cases: list[Annotated[int, Field(ge=1)]] | None = None
    labelled_slices: list[int] | None = None
    unlabelled_slices: list[int | None] | None = None
    fold: list[int] | Literal["all"] | None = None
    seed: list[int] | None = None
    label_draw: list[Annotated[int, Field(ge=0)]] | None = None


class SearchSpec(StrictModel):
    """Optuna searches: ``mismatch search FILE`` tunes every method over its declared space
    (``params``: a subset of setting names, e.g. ``[alpha, train.lr]``; None: all it declares),
    each with the same budget (``candidates`` x ``folds`` x ``seeds``); ``mismatch search alpha FILE``
    tunes ``param`` of the first method in [``low``, ``high``], with ``enqueue`` tried first."""

    params: list[str] | None = Field(None, min_length=1)
    param: str = "alpha"
    low: float = Field(1e-4, gt=0)
    high: float = Field(1e-2, gt=0)
    log: bool = True
    candidates: int = Field(12, ge=1)
    folds: list[int] = [0, 1, 2]
    seeds: list[int] | None = Field(None, min_length=1)
    """Training seeds every candidate is scored with, besides its folds (None: the grid's first)."""
    enqueue: list[float] = [0.002]
    sampler_seed: int = 0
    storage: str | None = None
    scheduler: Literal["none", "asha", "hyperband"] = "none"
    """Multi-fidelity pruning of candidates on their validation IoU at rung epochs (Optuna's
    SuccessiveHalvingPruner / HyperbandPruner, :mod:`mismatch.study.rungs`); ``none``: every
    candidate trains its full budget."""
    grace_epochs: int | dict[str, int] = 1
    """Epochs before a candidate's first rung: one number for every method (each method's
    consistency ramp-up raises it, :func:`mismatch.study.rungs.method_grace`), or per method
    name, with ``default`` for the others; a method named here gets exactly its value."""
    reduction_factor: int = Field(3, ge=2)
    """Rungs at grace x factor^k epochs; at each rung 1/factor of the candidates go on."""
    budget_epochs: int | None = Field(None, ge=1)
    """Each method's budget in trial-epochs (every epoch of every training run, pruned ones
    included): candidates start while the method has spent less (``candidates`` then caps them
    only where the file sets it)."""
    budget_hours: float | None = Field(None, gt=0)
    """Each method's budget in device-hours of training (summed ``train_time_s``), as ``budget_epochs``."""

    @field_validator("grace_epochs")
    @classmethod
    def _grace_positive(cls, value: int | dict[str, int]) -> int | dict[str, int]:
        values = value.values() if isinstance(value, dict) else [value]
        if any(v < 1 for v in values):
            raise ValueError("grace_epochs must be at least 1 epoch")
        return value

    @model_validator(mode="after")
    def _one_budget(self) -> SearchSpec:
        if self.budget_epochs is not None and self.budget_hours is not None:
            raise ValueError("give one budget: search.budget_epochs or search.budget_hours, not both")
        return self

    @property
    def budgeted(self) -> bool:
        """Whether the budget is in trial-epochs or device-hours rather than candidates."""
        return self.budget_epochs is not None or self.budget_hours is not None


class StudyFile(StrictModel):
    """The validated content of a study file (after a profile is applied)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    storage: str = "runs"
    base: dict[str, Any] = {}
    methods: list[dict[str, Any]] = Field(min_length=1)
    grid: Grid = Grid()
    resources: Resources = Resources()
    max_failures: int = Field(2, ge=0)
    max_concurrent: int | None = Field(None, ge=1)
    max_trials: int = Field(DEFAULT_MAX_TRIALS, ge=1)
    search: SearchSpec | None = None
    tuned: str | None = None
    #: Where each trial is tracked as a run (docs/studies.md); not part of any trial's id.
    tracking: Tracking = TrackingSpec()
    profiles: dict[str, dict[str, Any]] = {}

    @field_validator("methods")
    @classmethod
    def _named(cls, methods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, entry in enumerate(methods):
            if "name" not in entry:
                raise ValueError(f"methods[{i}] has no 'name'")
        return methods


def key_text(path: KeyPath) -> str:
    """A key path as written in messages: ``methods[0].model``, ``base.train.lr``."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return text or "<root>"


@dataclass
class FileLines:
    """Where a study file writes each key: turns a key's path in the file with its profile
    applied into the path and line in the file itself (``profiles.smoke.base.train.lr`` when
    the profile sets it), for messages like ``study.yaml:12: base.train.epoch: unknown key``."""

    source: str
    lines: dict[KeyPath, int] = field(default_factory=dict)
    profile: str | None = None

    def _known(self, path: KeyPath) -> int:
        """How many leading parts of ``path`` the file has."""
        return max((n for n in range(len(path), 0, -1) if path[:n] in self.lines), default=0)

    def locate(self, loc: KeyPath) -> tuple[KeyPath, int | None]:
        """``loc`` (a path in the merged file) as written in the file, and its line: the
        profile's value where the profile sets it; else the nearest enclosing key's line."""
        candidates = [loc]
        if self.profile is not None and loc[:1] != ("profiles",):
            candidates.insert(0, ("profiles", self.profile, *loc))
        exact = next((c for c in candidates if c in self.lines), None)
        if exact is not None:
            return exact, self.lines[exact]
        path = candidates[-1]  # nothing sets it (a required key): the plain path, nearest line
        known = self._known(path)
        if len(candidates) > 1 and self._known(candidates[0]) - 2 > known:
            path, known = candidates[0], self._known(candidates[0])
        return path, self.lines[path[:known]] if known else None

    def problem(self, loc: KeyPath, msg: str) -> str:
        """One line of an error: ``  FILE:LINE: key.path: msg``."""
        path, line = self.locate(loc)
        at = f"{self.source}:{line}: " if line is not None else ""
        return f"  {at}{key_text(path)}: {msg}"

    def error(self, problems: list[tuple[KeyPath, str]], header: str = "") -> SpecError:
        """A :class:`SpecError` listing ``problems`` (paths in the merged file) where the file wrote them."""
        lines = "\n".join(self.problem(loc, msg) for loc, msg in problems)
        return SpecError(f"invalid study in {self.source}{header}:\n{lines}", problems)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``: mappings merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
