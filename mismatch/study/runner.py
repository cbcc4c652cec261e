"""Run a study's trials as Ray Tune trials, on an embedded local Ray or a running cluster.

Trials whose rows already exist in the results store are not run again (a study re-run after
a kill, or with methods or folds added, runs only what is missing); a trial interrupted
mid-way continues from its last epoch checkpoint. Every trial writes its own Parquet files
from the worker, so a result is stored the moment a trial finishes, whatever happens to the
driver. See docs/studies.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import pyarrow.fs as pafs
from pydantic import ValidationError

from mismatch.atomic import DiskFullError, as_disk_full, is_disk_full
from mismatch.config import SpecError, TrialSpec, load_trial_spec
from mismatch.data.errors import DataError
from mismatch.fusion.support import plan_groups
from mismatch.results import TABLES
from mismatch.results.rows import fusion_columns
from mismatch.results.schema import SCHEMA_VERSION
from mismatch.study.lock import STALE_AFTER_S, StudyLock
from mismatch.study.preflight import check_plan_data
from mismatch.study.progress import Progress, group_labels, trial_labels
from mismatch.study.spec import Fuse, Study, trial_payload
from mismatch.study.store import (
    TrialCheckpoint,
    absolute_storage,
    completed_trials,
    corrupt_files,
    fused_groups,
    quarantine,
    resolve,
    trial_statuses,
    write_group_members,
    write_result,
    write_trial,
)
from mismatch.tracking import Tracker, TrackingSpec, open_tracker, prepare_tracking
from mismatch.trial.checkpoint import GROUP_CHECKPOINT as FUSED_CHECKPOINT
from mismatch.trial.evaluate import failed_trial_row
from mismatch.trial.run import run_trial
from mismatch.trial.state import NON_FINITE_ERRORS, TrialResult, utc_now

#: Errors that would recur on every retry: the trial is recorded as failed at once.
PERMANENT_ERRORS = (*NON_FINITE_ERRORS, DataError, SpecError)
#: How long a driver on a running cluster waits for a node that fits a trial (an autoscaler
#: may add one); ``--wait-resources`` overrides it.
WAIT_RESOURCES_S = 300.0
#: Ray's resource names of the study file's ``resources`` keys.
RAY_RESOURCE = {"cpu": "CPU", "gpu": "GPU"}
#: The metric of a trial stopped by a full disk: the error's one line (see :func:`trial_fn`).
DISK_FULL = "disk_full"
#: The only address the embedded local Ray listens on: it serves this driver alone.
LOOPBACK = "127.0.0.1"
#: Ray Tune runs a slot's next trial in the same worker process (no new process, no second
#: import of torch and the tracker: about 3-5 s a trial on 2 cores). A trial resets what it
#: sets process-wide (seed, determinism, threads, the peak-memory count), so nothing carries over.
REUSE_ACTORS = True


class ResourceError(RuntimeError):
    """A trial asks for more than any node of the cluster has: it could never start."""


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
    method = raw.get("method")
    now = utc_now()
    return {"schema_version": SCHEMA_VERSION, "study": str(raw.get("study", "adhoc")), "trial_id": trial["id"],
            "method": str(method.get("name", "")) if isinstance(method, dict) else str(method or ""),
            "status": "failed", "error": f"{type(error).__name__}: {error}",
            "spec_json": json.dumps(raw, sort_keys=True, default=str), "started_at": now, "finished_at": now}


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


def group_id(trial_ids: list[str]) -> str:
    """A fused group's id (its Tune trial, checkpoint folder and ``fuse_group``): a hash of its
    members' trial ids, so a re-run that plans the same group resumes its checkpoint."""
    digest = hashlib.sha256("\n".join(sorted(trial_ids)).encode()).hexdigest()[:12]
    return f"fused-{digest}"


def study_fn(config: dict[str, Any], storage: str, threads: int, tracking: TrackingSpec | None = None) -> None:
    """The Ray Tune trainable of a study: one trial (:func:`trial_fn`) or one fused group
    (:func:`group_fn`, a config whose ``trial`` has ``members``)."""
    if "members" in config["trial"]:
        group_fn(config, storage, threads, tracking)
    else:
        trial_fn(config, storage, threads, tracking=tracking)


def _member_failed(storage: str, spec: TrialSpec, err: BaseException, fused: dict[str, Any]) -> None:
    write_trial(storage, spec.study, spec.trial_id(), {**failed_trial_row(spec, err), **fused})


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
            _member_failed(unit.storage, spec, err, unit.failed_columns())
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
            _member_failed(unit.storage, spec, outcome, unit.failed_columns())
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

    return {"ray_node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}


def init_ray(address: str | None, verbose: bool) -> None:
    """Join ``address`` or start an embedded local Ray; quiet unless ``verbose``."""
    import ray

    if not verbose:  # our own Parquet rows are the results; skip Tune's per-trial JSON/CSV/TB files
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    kwargs: dict[str, Any] = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
    if ray.is_initialized():  # a second study run in this process (the rounds of --until-decided) reuses it
        return
    if address:
        ray.init(address=address, **kwargs)
    else:
        start_local_ray(**kwargs)


def start_local_ray(**kwargs: Any) -> None:
    """Start the embedded Ray of a driver without ``--address``, reachable from this machine only.

    Every Ray process listens on 127.0.0.1, and Ray's token authentication is on: with no
    ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` of the user's, a random token for this run is
    put in this process's environment (Ray's processes inherit it); it is never printed or
    written to disk. See cluster/README.md (Security).
    """
    import ray
    from ray._private import ray_constants

    os.environ["RAY_AUTH_MODE"] = "token"
    if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    _reload_ray_auth_config()
    # ray.init swaps a loopback _node_ip_address for the machine's routable address unless Ray
    # clusters are off (its macOS/Windows mode); off for this call only, 127.0.0.1 is kept.
    clusters = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(include_dashboard=False, _node_ip_address=LOOPBACK, **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = clusters


def _reload_ray_auth_config() -> None:
    """Make this process see the auth settings just put in its environment (Ray caches its
    config and token at first use, e.g. by an earlier ``import ray.tune``)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def effective_resources(study: Study) -> dict[str, float]:
    """The study's per-trial resources, with GPUs dropped where the cluster has none."""
    import ray

    wanted = study.file.resources
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    if wanted.gpu and not has_gpu:
        print(f"[{study.name}] no GPU in the cluster: trials run on the CPU", file=sys.stderr)
    return {"cpu": wanted.cpu, "gpu": wanted.gpu if has_gpu else 0}


def node_shortfall(resources: dict[str, float], nodes: list[dict[str, Any]]) -> str | None:
    """Why no live node can hold one trial (a trial runs on one node), or None if one can.

    ``nodes`` is :func:`ray.nodes`' list; the message names the study file's key and the
    largest node's amount, e.g. ``resources.cpu: 64 requested per trial, but the largest
    node has 2 CPUs``.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    wanted = {key: amount for key, amount in resources.items() if amount > 0}
    if any(all(node.get(RAY_RESOURCE[k], 0) >= v for k, v in wanted.items()) for node in alive):
        return None
    for key, amount in wanted.items():
        largest = max((node.get(RAY_RESOURCE[key], 0) for node in alive), default=0)
        if largest < amount:
            return (f"resources.{key}: {amount:g} requested per trial, but the largest node has "
                    f"{largest:g} {RAY_RESOURCE[key]}s")
    have = "; ".join(", ".join(f"{node.get(RAY_RESOURCE[k], 0):g} {RAY_RESOURCE[k]}s" for k in wanted) for node in alive)
    asked = ", ".join(f"resources.{k}: {v:g}" for k, v in wanted.items())
    return f"{asked} requested per trial, but no single node has them all (nodes: {have})"


def check_resources(study: Study, resources: dict[str, float], address: str | None,
                    wait_s: float = WAIT_RESOURCES_S, poll_s: float = 5.0) -> None:
    """Refuse, before any trial starts, resources that no node of the cluster can provide.

    On the embedded local Ray (no ``address``) the refusal is immediate. On a running cluster
    an autoscaler (invisible from the driver) may still add a node: warn, poll for ``wait_s``
    seconds, then raise :class:`ResourceError`.
    """
    import ray

    shortfall = node_shortfall(resources, ray.nodes())
    if shortfall is None:
        return
    if not address:
        _refuse_here(shortfall)
    print(f"[{study.name}] warning: {shortfall}; waiting up to {wait_s:g} s for a node that fits "
          "(an autoscaler may add one; --wait-resources SECONDS)", file=sys.stderr, flush=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        shortfall = node_shortfall(resources, ray.nodes())
        if shortfall is None:
            return
    raise ResourceError(f"{shortfall} (after waiting {wait_s:g} s for the cluster at {address}; lower "
                        "'resources' in the study file, add a larger node, or raise --wait-resources)")


def _refuse_here(shortfall: str | None) -> None:
    if shortfall:
        raise ResourceError(f"{shortfall} (this machine; lower 'resources' in the study file)")


def local_cpus() -> float:
    """The CPUs an embedded Ray gives this machine (Ray's own count: cgroup limits included)."""
    from ray._private.utils import get_num_cpus

    return get_num_cpus()


def trial_slots(study: Study, resources: dict[str, float]) -> int:
    """How many trials can run at once: the cluster's CPUs (GPUs) over one trial's, capped by
    ``max_concurrent``."""
    import ray

    have = ray.cluster_resources()
    fits = [int(have.get(RAY_RESOURCE[k], 0) // v) for k, v in resources.items() if v > 0]
    slots = max(1, min(fits, default=1))
    return min(slots, study.file.max_concurrent) if study.file.max_concurrent else slots


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


def plan_units(todo: list[TrialSpec], fuse: int, started: dict[str, list[str]] | None = None,
               specs: list[TrialSpec] | None = None) -> list[list[TrialSpec]]:
    """The trials to run as Tune trials: groups of up to ``fuse`` fusable trials (in study
    order), every other trial alone (:func:`mismatch.fusion.plan_groups`).

    With fusion on, a group that an earlier run started (``started``: its checkpoint folder's
    member list) and that still has a member in ``todo`` is planned again as it was, with every
    member (``specs``: the study's trials), so it resumes from its checkpoint: a kill between
    two members' row writes costs no training. Its stored members train along, unstored."""
    by_id = {s.trial_id(): s for s in (specs or todo)}
    pending = {s.trial_id() for s in todo}
    units: list[list[TrialSpec]] = []
    taken: set[str] = set()
    for group, members in (started or {}).items() if fuse > 1 else ():
        ids = set(members)
        if ids & pending and not ids & taken and ids <= set(by_id) and group == group_id(members):
            units.append([by_id[m] for m in members])
            taken |= ids
    rest = [s for s in todo if s.trial_id() not in taken]
    return units + [[rest[i] for i in group] for group in plan_groups(rest, fuse)]


def unit_config(unit: list[TrialSpec], kernels: str = "auto") -> dict[str, Any]:
    """The Tune config's ``trial`` of one unit: a trial (``id``, ``spec``) or a fused group
    (``id``: :func:`group_id`, ``members``: the trials' ``id`` and ``spec``, ``kernels``: how
    it steps)."""
    trials = [{"id": s.trial_id(), "spec": trial_payload(s)} for s in unit]
    if len(unit) == 1:
        return trials[0]
    return {"id": group_id([t["id"] for t in trials]), "members": trials, "kernels": kernels}


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
        _refuse_here(node_shortfall({"cpu": study.file.resources.cpu}, [{"Resources": {"CPU": local_cpus()}}]))
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


def fuse_size(fuse: Fuse, todo: list[TrialSpec], study: str, stream: TextIO, gpu: float = 0) -> int:
    """The group size K of ``fuse``: the number itself, or for ``auto`` the size that fits a
    trial's ``gpu`` share (:func:`auto_fuse`), printed once."""
    if fuse != "auto":
        return int(fuse)
    from mismatch.fusion.support import trial_fusable

    fusable = [s for s in todo if trial_fusable(s) is None]
    size, why = auto_fuse(fusable[0], gpu) if fusable else (1, "no trial to run can be fused")
    print(f"[{study}] fuse auto: K = {size} ({why})", file=stream, flush=True)
    return size


#: ``fuse: auto`` where trials get no CUDA device (a CPU gains little from fusion;
#: docs/studies.md has the measurements), and the most members ``auto`` ever picks.
AUTO_FUSE_CPU, AUTO_FUSE_MAX = 4, 64
#: The share of the device's free memory that ``auto`` fills (the rest: allocator slack, cuDNN workspaces).
AUTO_FUSE_SHARE = 0.8


def auto_fuse(spec: TrialSpec, gpu: float) -> tuple[int, str]:
    """K for ``fuse: auto`` and why, for trials that each hold ``gpu`` GPUs (Ray's resource;
    0.25: four groups share one device): measured where the trials run, on a Ray worker holding
    that share (:func:`measure_on_worker`; the driver may sit on a head node without a GPU),
    K = free memory x min(gpu, 1) x :data:`AUTO_FUSE_SHARE` over one member's peak, at most
    :data:`AUTO_FUSE_MAX`. Trials without a GPU, or a worker that sees no CUDA device, take
    :data:`AUTO_FUSE_CPU`."""
    if spec.train.device == "cpu" or gpu <= 0:
        return AUTO_FUSE_CPU, "trials get no GPU: the CPU default"
    measured = measure_on_worker(spec, gpu)
    if measured is None:
        return AUTO_FUSE_CPU, "no CUDA device on a worker holding the trials' GPU share: the CPU default"
    member, free = measured
    share = min(gpu, 1.0)
    size = max(1, min(AUTO_FUSE_MAX, int(free * share * AUTO_FUSE_SHARE // max(member, 1))))
    return size, (f"{member / 2**20:.0f} MiB per member, {free / 2**20:.0f} MiB free on the GPU, "
                  f"{share:g} of it per group")


def measure_on_worker(spec: TrialSpec, gpu: float) -> tuple[int, int] | None:
    """:func:`measure_member` run as a Ray task holding ``gpu`` GPUs, as a trial does; its
    worker exits afterwards (``max_calls=1``), so its CUDA context leaves no memory behind."""
    import ray

    task = ray.remote(num_cpus=0, num_gpus=gpu, max_retries=0, max_calls=1)(measure_member)
    return ray.get(task.remote(spec))


def measure_member(spec: TrialSpec) -> tuple[int, int] | None:
    """``(peak bytes of one member, free bytes)`` on this process's CUDA device, or None if it
    sees none."""
    import torch

    if not torch.cuda.is_available():
        return None
    from mismatch.trial.fused import member_peak_bytes

    member = member_peak_bytes(spec)
    return member, torch.cuda.mem_get_info()[0]


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
        _member_failed(storage, spec, cause, extra)


def _disk_full_of(message: str) -> DiskFullError:
    """The driver's error for a worker's full-disk line (the worker's text, kept as is)."""
    return DiskFullError("?", text=message)


def _root_cause(error: BaseException) -> BaseException:
    """Ray wraps a worker's exception; keep the innermost message for the row."""
    cause = getattr(error, "cause", None) or error.__cause__
    return cause if isinstance(cause, BaseException) else error
