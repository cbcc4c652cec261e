"""Run a study's trials as Ray Tune trials, on an embedded local Ray or a running cluster.

Trials whose rows already exist in the results store are not run again (a study re-run after
a kill, or with methods or folds added, runs only what is missing); a trial interrupted
mid-way continues from its last epoch checkpoint. Every trial writes its own Parquet files
from the worker, so a result is stored the moment a trial finishes, whatever happens to the
driver. See docs/studies.md.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO

from mismatch.atomic import DiskFullError, as_disk_full, is_disk_full
from mismatch.config import SpecError, TrialSpec
from mismatch.results.rows import fusion_columns
from mismatch.study.lock import STALE_AFTER_S, StudyLock
from mismatch.study.preflight import check_plan_data
from mismatch.study.progress import Progress, group_labels, trial_labels
from mismatch.study.ray_session import init_ray
from mismatch.study.resources import (
    WAIT_RESOURCES_S,
    check_resources,
    effective_resources,
    local_cpus,
    node_shortfall,
    refuse_here,
    trial_slots,
)
from mismatch.study.store import (
    absolute_storage,
    completed_trials,
    corrupt_files,
    fused_groups,
    quarantine,
    trial_statuses,
    write_trial,
)
from mismatch.study.study_file import Fuse
from mismatch.study.trials import Study
from mismatch.study.units import fuse_size, plan_units, unit_config
from mismatch.study.worker import DISK_FULL, spec_from_config, study_fn, unbuildable_trial_row, write_failed_row
from mismatch.tracking import prepare_tracking

#: Ray Tune runs a slot's next trial in the same worker process (no new process, no second
#: import of torch and the tracker: about 3-5 s a trial on 2 cores). A trial resets what it
#: sets process-wide (seed, determinism, threads, the peak-memory count), so nothing carries over.
REUSE_ACTORS = True


@dataclass
class StudyOutcome:
    """What a study run did: trial counts by what happened to them."""

    total: int
    skipped: int
    completed: int
    failed: int
    unfinished: int = 0
    #: Trials skipped because an earlier run recorded them as failed for good (``--retry-failed``).
    failed_before: int = 0


def pending_trials(study: Study, storage: str, retry_failed: bool) -> tuple[list[TrialSpec], dict[str, str]]:
    """Trials of the study that still have to run, and the statuses already stored."""
    statuses = trial_statuses(storage, study.name)
    todo = []
    for spec in study.trials():
        status = statuses.get(spec.trial_id())
        if status == "completed" or (status == "failed" and not retry_failed):
            continue
        todo.append(spec)
    return todo, statuses


def quarantine_corrupt(study: Study, storage: str, stream: TextIO | None = None) -> list[tuple[str, str]]:
    """Move the study's corrupt files to quarantine/ (one line each, to ``stream``, by default
    the ``sys.stdout`` of the call) so their trials run again."""
    stream = sys.stdout if stream is None else stream
    corrupt = corrupt_files(storage, study.name)
    errors = {c.path: c.error for c in corrupt}
    moves = quarantine(storage, study.name, corrupt)
    for source, target in moves:
        why = f"corrupt ({errors[source]})" if source in errors else "the row of a trial with a corrupt file"
        print(f"[{study.name}] quarantined {source} -> {target}: {why}; the trial runs again",
              file=stream, flush=True)
    return moves


def run_study(
    study: Study,
    storage: str | None = None,
    address: str | None = None,
    verbose: bool = False,
    retry_failed: bool = False,
    stream: TextIO | None = None,
    wait_resources_s: float = WAIT_RESOURCES_S,
    stale_lock_s: float = STALE_AFTER_S,
    fuse: Fuse | None = None,
) -> StudyOutcome:
    """Run every trial of ``study`` that has no stored result yet; returns what happened
    (progress goes to ``stream``, by default the ``sys.stdout`` of the call).

    ``fuse`` (``--fuse``; None: the study file's ``resources.fuse``) trains up to that many
    compatible trials as one fused group, one Ray Tune trial (1: one trial per process).

    One driver per study and storage: raises :class:`~mismatch.study.lock.LockHeld` while
    another live driver holds ``<storage>/<study>/driver.lock``, and :class:`ResourceError`
    (before any trial starts) when no node can hold one trial's ``resources``.
    """
    stream = sys.stdout if stream is None else stream
    storage = study.storage if storage is None else absolute_storage(storage)
    with StudyLock(storage, study.name, stale_after_s=stale_lock_s):
        return _run_locked(study, storage, address, verbose, retry_failed, stream, wait_resources_s,
                           study.file.resources.fuse if fuse is None else fuse)


def _run_locked(study: Study, storage: str, address: str | None, verbose: bool, retry_failed: bool,
                stream: TextIO, wait_resources_s: float, fuse: Fuse = 1) -> StudyOutcome:
    specs = study.trials()
    quarantine_corrupt(study, storage, stream)
    todo, statuses = pending_trials(study, storage, retry_failed)
    skipped = len(specs) - len(todo)
    failed_before = 0 if retry_failed else sum(statuses.get(s.trial_id()) == "failed" for s in specs)
    print(f"[{study.name}] {len(specs)} trials: {skipped} already done, {len(todo)} to run -> {storage}/{study.name}",
          file=stream, flush=True)
    if failed_before:
        print(f"[{study.name}] {failed_before} trial(s) failed for good in an earlier run and are skipped; "
              "`mismatch study status` shows their errors; run again with --retry-failed to retry them",
              file=stream, flush=True)
    if not todo:
        return StudyOutcome(len(specs), skipped, 0, 0, failed_before=failed_before)
    if not address:  # refused before the embedded Ray's seconds-long start
        check_plan_data(study, todo)  # its workers read the driver's files: every data error, in one message
        refuse_here(node_shortfall({"cpu": study.file.resources.cpu}, [{"Resources": {"CPU": local_cpus()}}]))
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The tracker's store is set up (a missing package fails here, once) while Ray starts:
        # MLflow's import and SQLite tables take seconds a study would otherwise wait for.
        tracking = pool.submit(prepare_tracking, study.file.tracking, storage, study.name)
        init_ray(address, verbose)
        tracking.result()
    resources = effective_resources(study)
    check_resources(study, resources, address, wait_resources_s)
    size = fuse_size(fuse, todo, study.name, stream, resources["gpu"])
    units = plan_units(todo, size, fused_groups(storage, study.name) if size > 1 else None, specs)
    if size > 1:
        pending = {s.trial_id() for s in todo}
        fused = sum(s.trial_id() in pending for u in units if len(u) > 1 for s in u)  # a resumed group's stored members apart
        print(f"[{study.name}] fuse {size}: {fused} trial(s) in {sum(len(u) > 1 for u in units)} fused group(s), "
              f"{len(todo) - fused} alone; each group is one Ray trial with the per-trial resources",
              file=stream, flush=True)
    progress = Progress(study.name, len(specs), skipped, stream, slots=trial_slots(study, resources),
                        labels={**trial_labels(todo), **group_labels([unit_config(u) for u in units if len(u) > 1])},
                        live=False if verbose else None)  # Ray's tables: plain lines
    grid = _fit(study, storage, units, resources, verbose, progress)
    full = _record_errored(grid, storage)
    if full is not None:  # every trial finished before is stored; the others run again next time
        raise full
    final = trial_statuses(storage, study.name)
    ids = [s.trial_id() for s in todo]
    completed = sum(final.get(i) == "completed" for i in ids)
    failed = sum(final.get(i) == "failed" for i in ids)
    unfinished = len(ids) - completed - failed
    if unfinished:  # stopped early (SIGINT, a lost driver connection): nothing is marked failed
        print(f"[{study.name}] stopped: {completed} completed, {failed} failed, {unfinished} not finished; "
              "run the same command again to continue", file=stream, flush=True)
    else:
        print(f"[{study.name}] finished: {completed} completed, {failed} failed, {skipped} skipped",
              file=stream, flush=True)
    return StudyOutcome(len(specs), skipped, completed, failed, unfinished, failed_before)


def _fit(study: Study, storage: str, units: list[list[TrialSpec]], resources: dict[str, float], verbose: bool,
         progress: Any) -> Any:
    from ray import tune

    threads = max(1, int(resources["cpu"]))
    trainable = tune.with_resources(tune.with_parameters(study_fn, storage=storage, threads=threads,
                                                         tracking=study.file.tracking), resources)
    trials = [unit_config(u, study.file.resources.fuse_kernels) for u in units]
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=study.file.max_concurrent,
            reuse_actors=REUSE_ACTORS,
            trial_name_creator=lambda t: t.config["trial"]["id"],
            trial_dirname_creator=lambda t: t.config["trial"]["id"],
        ),
        run_config=tune.RunConfig(
            name=f"run-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=f"{storage}/{study.name}/_ray",
            failure_config=tune.FailureConfig(max_failures=study.file.max_failures),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
            callbacks=[progress],
            stop=stop_on_full_disk(),
            verbose=1 if verbose else 0,
        ),
    )
    return tuner.fit()


def stop_on_full_disk() -> Any:
    """A Tune ``Stopper`` that ends the whole run once a trial reports a full disk
    (:data:`DISK_FULL`): every later trial would fail the same way."""
    from ray.tune import Stopper

    class StopOnFullDisk(Stopper):
        def __init__(self) -> None:
            self.full = False

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            self.full = self.full or bool(result.get(DISK_FULL))
            return self.full

        def stop_all(self) -> bool:
            return self.full

    return StopOnFullDisk()


def _record_errored(grid: Any, storage: str) -> DiskFullError | None:
    """Trials that exhausted their retries get a failed row with Ray's error; a trial stopped
    by a full disk gets none (it runs again) and is returned, to end the run with its line."""
    full: DiskFullError | None = None
    for result in grid:
        reported = (getattr(result, "metrics", None) or {}).get(DISK_FULL)
        if reported:
            full = full or _disk_full_of(reported)
            continue
        if result.error is None:
            continue
        cause = _root_cause(result.error)
        if is_disk_full(cause):
            full = full or as_disk_full(cause, getattr(cause, "filename", None) or storage)
            continue
        trial = result.config.get("trial") or {}
        if "members" in trial:  # a fused group: each member not stored
            fused = fusion_columns(trial["id"], len(trial["members"]))
            for member in trial["members"]:
                _record_failed({"trial": member}, storage, cause, fused)
        else:
            _record_failed(result.config, storage, cause, {})
    return full


def _record_failed(config: dict[str, Any], storage: str, cause: BaseException, extra: dict[str, Any]) -> None:
    """The failed row of the trial of ``config`` (plus ``extra``), unless its completed row was
    stored before its worker died."""
    try:
        spec = spec_from_config(config)
    except SpecError as err:  # the worker could not build it either; never stop the driver
        row = unbuildable_trial_row(config, err)
        if row is not None and not completed_trials(storage, row["study"], [row["trial_id"]]):
            write_trial(storage, row["study"], row["trial_id"], {**row, **extra})
        return
    if not completed_trials(storage, spec.study, [spec.trial_id()]):
        write_failed_row(storage, spec, cause, extra)


def _disk_full_of(message: str) -> DiskFullError:
    """The driver's error for a worker's full-disk line (the worker's text, kept as is)."""
    return DiskFullError("?", text=message)


def _root_cause(error: BaseException) -> BaseException:
    """Ray wraps a worker's exception; keep the innermost message for the row."""
    cause = getattr(error, "cause", None) or error.__cause__
    return cause if isinstance(cause, BaseException) else error
