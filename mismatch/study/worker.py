"""The worker side of a study: the Ray Tune trainables, and one unit (a trial alone or a fused
group) from its Tune config to its stored rows.

Every study and search trial goes through :func:`run_unit`: build each member's spec, open its
checkpoint and trackers, train (:func:`mismatch.trial.run.run_trial` or
:func:`~mismatch.trial.run.run_group`), write each member's rows from the worker, report to
Tune. A permanent error fails the unit for good (failed rows, no retry); a full disk ends it
for this run only; any other error goes to Ray (a retry from the checkpoint).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from pydantic import ValidationError

from mismatch.atomic import as_disk_full, is_disk_full
from mismatch.config import SpecError, TrialSpec, load_trial_spec
from mismatch.results import TABLES, rows
from mismatch.results.rows import fusion_columns, placement_columns
from mismatch.study.store import (
    TrialCheckpoint,
    completed_trials,
    resolve,
    write_group_members,
    write_result,
    write_trial,
)
from mismatch.tracking import Tracker, TrackingSpec, open_tracker
from mismatch.trial.checkpoint import GROUP_CHECKPOINT as FUSED_CHECKPOINT
from mismatch.trial.evaluate import failed_trial_row
from mismatch.trial.run import run_trial
from mismatch.trial.state import PERMANENT_ERRORS, TrialResult, utc_now

#: The metric of a trial stopped by a full disk: the error's one line (see :func:`trial_fn`).
DISK_FULL = "disk_full"


def spec_from_config(config: dict[str, Any]) -> TrialSpec:
    """The spec a study trial carries in its Tune config (see :func:`trial_payload`);
    a spec that no longer validates is a :class:`SpecError` naming the trial and the key."""
    trial = config["trial"]
    return load_trial_spec(trial["spec"], source=f"trial {trial.get('id', '?')}")


def unbuildable_trial_row(config: dict[str, Any], error: BaseException) -> dict[str, Any] | None:
    """The failed row of a study trial whose spec does not validate, from its raw payload
    (None where the config names no trial id: nothing to record it under)."""
    trial = config.get("trial")
    if not isinstance(trial, dict) or not isinstance(trial.get("id"), str):
        return None
    raw = trial.get("spec") if isinstance(trial.get("spec"), dict) else {}
    return rows.unbuildable_trial_row(trial["id"], raw, error, utc_now())


def trial_fn(
    config: dict[str, Any],
    storage: str,
    threads: int,
    spec_of: Callable[[dict[str, Any]], TrialSpec] = spec_from_config,
    objective: Callable[[TrialSpec, TrialResult], dict[str, float]] | None = None,
    tracking: TrackingSpec | None = None,
) -> None:
    """The Ray Tune trainable of studies and searches: one trial, rows written by the worker.

    ``spec_of`` builds the trial's spec from the Tune config (a study's carries it; a search
    builds its candidate). A permanent error writes a failed row and reports
    ``status_failed`` (no retry); a finished trial's last report adds ``objective``'s metrics.
    ``tracking`` (None: none) records the trial as a run, continued when the trial resumes.
    A unit of one member (:func:`run_unit`).
    """
    run_unit(Unit(storage, [config], spec_of=spec_of, objective=objective), threads, tracking)


def _report_disk_full(err: OSError, path: str) -> None:
    """End a trial whose disk filled up as failed for this run only: no failed row (it runs
    again after space is freed, from its checkpoint) and no Ray traceback or ``error.pkl``;
    the driver stops the study and prints the error's one line."""
    from ray import tune

    full = as_disk_full(err, path)
    tune.report({"status_failed": 1, DISK_FULL: str(full), "error": str(full)})


def study_fn(config: dict[str, Any], storage: str, threads: int, tracking: TrackingSpec | None = None) -> None:
    """The Ray Tune trainable of a study: one trial (:func:`trial_fn`) or one fused group
    (:func:`group_fn`, a config whose ``trial`` has ``members``)."""
    if "members" in config["trial"]:
        group_fn(config, storage, threads, tracking)
    else:
        trial_fn(config, storage, threads, tracking=tracking)


def write_failed_row(storage: str, spec: TrialSpec, err: BaseException, extra: dict[str, Any] | None = None) -> str:
    """Store the failed row of ``spec`` (plus ``extra``: a group's fusion columns): the one
    writer of a failed trial's row, for a study's workers and driver and ``mismatch train``."""
    return write_trial(storage, spec.study, spec.trial_id(), {**failed_trial_row(spec, err), **(extra or {})})


def group_fn(config: dict[str, Any], storage: str, threads: int, tracking: TrackingSpec | None = None) -> None:
    """One fused group as one Tune trial: :func:`mismatch.trial.run.run_group` over its members,
    one checkpoint per group (resumed by a retry or a re-run planning the same group), and each
    member's rows written as a solo trial's plus ``fuse_group`` / ``fuse_size``. A member whose
    loss became non-finite gets its failed row; the others are stored as usual (:func:`run_unit`)."""
    trial = config["trial"]
    run_unit(Unit(storage, [{"trial": m} for m in trial["members"]], trial["id"], kernels=trial.get("kernels", "auto")),
             threads, tracking)


@dataclass(frozen=True)
class Unit:
    """One Ray Tune trial as both trainables run it (:func:`run_unit`): a solo trial (``group``
    ``""``) or a fused group, with one Tune config (``{"trial": ...}``) per member."""

    storage: str
    configs: list[dict[str, Any]]
    group: str = ""
    #: Builds a member's spec from its config (a search builds its candidate's).
    spec_of: Callable[[dict[str, Any]], TrialSpec] = spec_from_config
    #: Metrics (of the first member's result) added to the last report.
    objective: Callable[[TrialSpec, TrialResult], dict[str, float]] | None = None
    #: Members whose completed rows are stored already (a group resumed after a kill between two
    #: members' row writes): trained along with the others, neither stored again nor tracked.
    stored: frozenset[str] = frozenset()
    #: How a group steps (``resources.fuse_kernels``: :func:`mismatch.trial.run.group_stepper`).
    kernels: str = "auto"

    def fused(self) -> dict[str, Any]:
        """The fusion columns of its members' result rows (a solo trial: ``""``, 1)."""
        return fusion_columns(self.group, len(self.configs))

    def failed_columns(self) -> dict[str, Any]:
        """What its failed rows add: a group's fusion columns; a solo trial's failed row has none."""
        return self.fused() if self.group else {}

    def counts(self, failed: int) -> dict[str, int]:
        """A group's report keys ``members`` / ``members_failed`` (none for a solo trial)."""
        return {"members": len(self.configs) - len(self.stored), "members_failed": failed} if self.group else {}


def run_unit(unit: Unit, threads: int, tracking: TrackingSpec | None = None) -> None:
    """Build every member's spec -> train -> store each member: the one path of every study and
    search trial. An unbuildable spec or a permanent training error fails every member for good
    (failed rows, ``status_failed``, no retry); a full disk ends the trial for this run only
    (:func:`_report_disk_full`); any other error is raised to Ray (a retry)."""
    from mismatch.runtime import set_threads

    set_threads(threads)
    try:
        specs = [unit.spec_of(config) for config in unit.configs]
    except (SpecError, ValidationError) as err:  # would fail on every retry: failed for good, now
        _fail_unbuildable(unit, err)
        return
    if unit.group:
        unit = replace(unit, stored=frozenset(completed_trials(unit.storage, specs[0].study, [s.trial_id() for s in specs])))
    ckpt, trackers = _open_unit(unit, specs, tracking)
    outcomes = _train_unit(unit, specs, ckpt, trackers)
    if outcomes is None:
        return
    try:
        ious = _store_members(unit, specs, outcomes, trackers)
    except OSError as err:
        if not is_disk_full(err):
            raise
        _report_disk_full(err, f"{unit.storage}/{specs[0].study}")
        return
    ckpt.delete()
    metrics = unit.objective(specs[0], outcomes[0]) if unit.objective is not None else {}
    _report_done(unit, [o for s, o in zip(specs, outcomes) if s.trial_id() not in unit.stored], ious, metrics)


def _error_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _report_failed(unit: Unit, err: BaseException) -> None:
    """End a unit whose every member failed for good (no retry)."""
    from ray import tune

    tune.report({"status_failed": 1, **unit.counts(len(unit.configs)), "error": _error_line(err)})


def _fail_unbuildable(unit: Unit, err: BaseException) -> None:
    """A spec that does not validate: every member's failed row from its raw payload, then the report."""
    for config in unit.configs:
        row = unbuildable_trial_row(config, err)
        if row is not None:
            write_trial(unit.storage, row["study"], row["trial_id"], {**row, **unit.failed_columns()})
    _report_failed(unit, err)


def _open_unit(unit: Unit, specs: list[TrialSpec], tracking: TrackingSpec | None
               ) -> tuple[TrialCheckpoint, list[Tracker]]:
    """The unit's checkpoint, fetched (a group's ``fused.pt``, next to its members' list), and
    each member's started tracker."""
    study = specs[0].study
    ckpt = TrialCheckpoint(unit.storage, study, unit.group or specs[0].trial_id(),
                           file=FUSED_CHECKPOINT if unit.group else None)
    ckpt.fetch()
    if unit.group:
        write_group_members(unit.storage, study, unit.group, [s.trial_id() for s in specs])
    return ckpt, [open_tracker(None if spec.trial_id() in unit.stored else tracking, unit.storage, spec) for spec in specs]


def _train_unit(unit: Unit, specs: list[TrialSpec], ckpt: TrialCheckpoint, trackers: list[Tracker]
                ) -> list[Any] | None:
    """Each member's outcome (its result, or the error that failed it alone), or None where the
    unit ended here: a permanent error (every member's failed row and failed run, the checkpoint
    deleted) or a full disk."""
    hook, local = _epoch_hook(unit, ckpt, trackers), Path(ckpt.local)
    try:
        if unit.group:
            from mismatch.trial.run import run_group

            return run_group(specs, kernels=unit.kernels, on_epoch_end=hook, checkpoint_dir=local)
        return [run_trial(specs[0], on_epoch_end=lambda report: hook(0, report), checkpoint_dir=local)]
    except PERMANENT_ERRORS as err:
        for spec, tracker in zip(specs, trackers):
            if spec.trial_id() in unit.stored:
                continue
            write_failed_row(unit.storage, spec, err, unit.failed_columns())
            tracker.fail(_error_line(err))
        ckpt.delete()
        _report_failed(unit, err)
    except OSError as err:
        if not is_disk_full(err):
            raise
        _report_disk_full(err, ckpt.remote)
    return None


def _epoch_hook(unit: Unit, ckpt: TrialCheckpoint, trackers: list[Tracker]) -> Callable[[int, Any], None]:
    """Member ``k``'s epoch to its tracker, the checkpoint pushed once per epoch, then Tune's
    report: the first member's carries the unit's ``epoch`` (one progress line per epoch), a
    group's others ``member_epoch``; a group's reports name the ``member``."""
    from ray import tune

    pushed = [-1]

    def on_epoch_end(k: int, report: Any) -> None:
        metrics = {**report.val, **{f"loss_{name}": v for name, v in report.losses.items()}}
        # Logged before the checkpoint is pushed: an epoch that a resumed trial skips is logged.
        trackers[k].log_epoch(report.epoch, {**metrics, "time_s": report.time_s})
        first = pushed[0] != report.epoch  # the checkpoint was written once for the epoch, before these calls
        if first:
            ckpt.push()
            pushed[0] = report.epoch
        member = {"member": k} if unit.group else {}
        tune.report({"epoch" if first else "member_epoch": report.epoch + 1, **member, **metrics})

    return on_epoch_end


def _store_members(unit: Unit, specs: list[TrialSpec], outcomes: list[Any], trackers: list[Tracker]) -> list[float]:
    """Write every member's rows (a failed member: its failed row); the completed members' test IoU."""
    extra = {**placement(), **unit.fused()}
    ious = []
    for spec, outcome, tracker in zip(specs, outcomes, trackers, strict=True):
        if spec.trial_id() in unit.stored:
            continue
        if isinstance(outcome, BaseException):
            write_failed_row(unit.storage, spec, outcome, unit.failed_columns())
            tracker.fail(_error_line(outcome))
            continue
        folder = write_result(unit.storage, outcome, extra)
        with tempfile.TemporaryDirectory(prefix="mismatch-track-") as scratch:
            tracker.finish(outcome.trial, epoch_records(outcome.epochs), result_files(folder, spec.trial_id(), scratch))
        ious.append(float(outcome.images["iou"].mean()))
    return ious


def _report_done(unit: Unit, outcomes: list[Any], ious: list[float], metrics: dict[str, float]) -> None:
    """The last report of a stored unit: failed only if no member completed; the first member error."""
    from ray import tune

    errors = [_error_line(o) for o in outcomes if isinstance(o, BaseException)]
    tune.report({"status_failed": int(not ious), **unit.counts(len(outcomes) - len(ious)), "done_trial": len(ious),
                 "test_iou": sum(ious) / len(ious) if ious else float("nan"),
                 **({"error": errors[0]} if errors else {}), **metrics})


def epoch_records(epochs: Any) -> list[dict[str, Any]]:
    """The epochs table's rows as a tracker logs them live: ``epoch``, ``time_s``, ``loss_*``, ``val_*``."""
    keep = [c for c in epochs.columns if c in ("epoch", "time_s") or c.startswith(("loss_", "val_"))]
    return epochs[keep].to_dict("records")


def result_files(folder: str, trial_id: str, scratch: str) -> dict[str, str]:
    """A written trial's Parquet files as ``{"results/<table>": local path}`` (for a tracker's
    artifacts); files of a storage URI are copied into ``scratch`` first."""
    fs, base = resolve(folder)
    files = {}
    for table in TABLES:
        path = f"{base}/{table}/{trial_id}.parquet"
        if fs.get_file_info(path).type != pafs.FileType.File:
            continue
        if isinstance(fs, pafs.LocalFileSystem):
            files[f"results/{table}"] = path
        else:
            local = os.path.join(scratch, table, f"{trial_id}.parquet")
            os.makedirs(os.path.dirname(local), exist_ok=True)
            pafs.copy_files(path, local, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            files[f"results/{table}"] = local
    return files


def placement() -> dict[str, str]:
    """The Ray node a trial ran on (its id and IP), for the per-trial row."""
    import ray

    return placement_columns(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address())
