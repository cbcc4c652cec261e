"""What every tracker does for one trial: a run found or created by the trial's id, epochs
logged once each, the final row and the result files at the end.

A trial's run is looked up by its ``trial_id`` tag (or the tracker's own id for it), so a
retried or resumed trial continues its run; an epoch already logged (a trial that restarts
from its last checkpoint trains a few epochs again) is skipped, and an epoch that a kill
kept from being logged (after its checkpoint, before its log) is logged when the trial
finishes, from its epochs table.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mismatch.config import TrialSpec
from mismatch.registry import load_object
from mismatch.tracking.config import TRACKERS, TrackingSpec

log = logging.getLogger(__name__)

#: Spec keys that repeat one configuration (its folds, label draws and seeds).
REPLICATE_KEYS = (("protocol", "fold"), ("protocol", "label_draw"), ("train", "seed"))


class TrackingError(RuntimeError):
    """The study's tracker cannot be set up as configured (a one-line message saying why)."""


class TrackingUnavailable(TrackingError, ImportError):
    """A tracker's package is not installed (the message names the extra to install)."""


@dataclass(frozen=True)
class RunInfo:
    """One trial as a tracked run: its experiment (the study), id, group, params and tags."""

    study: str
    trial_id: str
    group: str
    params: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)


def config_group(spec: TrialSpec) -> str:
    """The id of the trial's configuration: its identity without fold, label draw and seed,
    so the folds and seeds of one configuration share it (``<method>-<12 hex>``)."""
    identity = spec.identity_dict()
    for section, key in REPLICATE_KEYS:
        identity.get(section, {}).pop(key, None)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    return f"{spec.method.name}-{digest}"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as ``{"train.lr": "0.01", ...}`` (lists as JSON, None as ``None``)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def run_info(spec: TrialSpec) -> RunInfo:
    """The run of ``spec``: params are the spec flattened, tags name the grid point."""
    trial_id = spec.trial_id()
    group = config_group(spec)
    tags = {"study": spec.study, "method": spec.method.name, "model": str(getattr(spec.method, "model", "")),
            "labelled_slices": str(spec.protocol.labelled_slices), "fold": str(spec.protocol.fold),
            "label_draw": str(spec.protocol.label_draw), "seed": str(spec.train.seed), "trial_id": trial_id,
            "config_group": group}
    return RunInfo(spec.study, trial_id, group, flatten(spec.model_dump(mode="json")), tags)


def numeric(values: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a row (numpy scalars and booleans too), for a tracker's metrics."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (str, bytes)) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


class Tracker:
    """One trial's run. Subclasses implement the ``_``-methods; this class skips epochs already
    logged and turns a tracker's failure into a warning (a trial's results never depend on it)."""

    def __init__(self, spec: TrackingSpec, storage: str, study: str) -> None:
        self.spec = spec
        self.storage = storage
        self.study = study
        self.logged: set[int] = set()
        self.active = False

    @classmethod
    def prepare(cls, spec: TrackingSpec, storage: str, study: str) -> None:
        """Once per study run, on the driver, before any trial (a store's tables, an experiment)."""

    def start(self, run: RunInfo) -> None:
        """Open (or resume) the run of ``run.trial_id``."""
        ok, logged = self._guard(lambda: self._start(run))
        self.active = ok
        self.logged = set(logged) if ok else set()

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> bool:
        """Log one epoch's metrics at ``step=epoch``; False where it was logged before."""
        if not self.active or epoch in self.logged:
            return False
        ok, _ = self._guard(lambda: self._log_epoch(epoch, numeric(metrics)))
        if ok:
            self.logged.add(epoch)
        return ok

    def finish(self, row: dict[str, Any], epochs: list[dict[str, Any]], files: dict[str, str]) -> None:
        """Log the epochs not logged yet, the final row's numbers (as ``trial.<column>``) and
        ``files`` (artifact folder -> local path), and close the run as finished."""
        for record in sorted(epochs, key=lambda r: r["epoch"]):
            self.log_epoch(int(record["epoch"]), {k: v for k, v in record.items() if k != "epoch"})
        if self.active:
            final = {f"trial.{k}": v for k, v in numeric(row).items()}
            self._guard(lambda: self._finish(final, files))
            self.active = False

    def fail(self, error: str) -> None:
        """Close the run as failed (a trial that failed for good)."""
        if self.active:
            self._guard(lambda: self._fail(error))
            self.active = False

    def _guard(self, call: Callable[[], Any]) -> tuple[bool, Any]:
        """``(True, call())``, or ``(False, None)`` with a warning when the tracker fails."""
        try:
            return True, call()
        except TrackingError:
            raise
        except Exception as err:  # a tracker's outage must not fail the trial
            log.warning("tracking (%s) failed, the trial goes on untracked: %s: %s", self.spec.kind,
                        type(err).__name__, err)
            self.active = False
            return False, None

    def _start(self, run: RunInfo) -> set[int]:
        """Open or resume the run; returns the epochs it has logged."""
        raise NotImplementedError

    def _log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def _finish(self, final: dict[str, float], files: dict[str, str]) -> None:
        raise NotImplementedError

    def _fail(self, error: str) -> None:
        raise NotImplementedError


class NoTracker(Tracker):
    """``tracking: none``: nothing is written anywhere."""

    def start(self, run: RunInfo) -> None:
        self.active = False


def tracker_class(spec: TrackingSpec) -> type[Tracker]:
    """The tracker class of ``spec.kind`` (imports its module, not yet its package)."""
    return load_object(TRACKERS.get(spec.kind))


def open_tracker(spec: TrackingSpec | None, storage: str, trial: TrialSpec) -> Tracker:
    """The started tracker of one trial (:class:`NoTracker` when ``spec`` is None)."""
    spec = spec or TrackingSpec(kind="none")
    tracker = tracker_class(spec)(spec, storage, trial.study)
    tracker.start(run_info(trial))
    return tracker


def prepare_tracking(spec: TrackingSpec | None, storage: str, study: str) -> None:
    """Check the tracker's package and set up its store, on the driver before any trial."""
    if spec is not None:
        tracker_class(spec).prepare(spec, storage, study)


def require(package: str, install: str) -> Any:
    """Import ``package`` or raise :class:`TrackingUnavailable` saying what to install."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise TrackingUnavailable(f"tracking needs the {package} package: pip install {install} "
                                  "(or set tracking: none in the study file)") from None


def local_root(storage: str, study: str, folder: str) -> str:
    """``<storage>/<study>/<folder>`` for a local storage; a URI storage needs an explicit place."""
    if "://" in storage and not storage.startswith("file://"):
        raise TrackingError(f"the default tracking store lives under a local storage, not {storage}: set "
                            "tracking: {mlflow: URI} (or {tensorboard: FOLDER}, or none) in the study file")
    return os.path.join(storage.removeprefix("file://"), study, folder)
