"""Live progress of a study run: what runs, each trial's epoch heartbeat, and an honest ETA.

A terminal gets a live table (rich); anything else (a log file, CI) gets plain timestamped
lines: one per trial start, end and epoch, plus one at least every :data:`HEARTBEAT_S`
seconds while anything runs. Ray's own tables appear only with ``--verbose``.

The ETA is the mean wall time of a finished trial *as the driver sees it* times the trials
left, divided by the trial slots. A trial's wall time runs from the moment its slot became free
(the run's start, or the end of the trial before it) to Tune reporting it complete, so Ray's
per-trial overhead (a worker process started and torch imported before Tune says the trial
started) is in, not only the training time. "Running" counts the trials Tune reports as
RUNNING (never more than the slots), not trials started minus finished: a lost worker's trial
that Tune retries is counted once.

Ray is imported only when :func:`Progress` builds the Tune callback, and rich only when the
live display starts, never at import time.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from mismatch.study.status import format_eta

#: Seconds between plain progress lines while trials run but report nothing.
HEARTBEAT_S = 30.0
#: The validation metric shown in a trial's heartbeat (see mismatch.trial.evaluate.validate).
VAL_METRIC = "val_iou"


@dataclass(frozen=True)
class TrialLabel:
    """How a trial is named in progress output: ``mismatch[width=8] L=5 fold 1``."""

    method: str
    variant: str = ""
    labelled: int | None = None
    fold: int | None = None
    epochs: int | None = None

    def text(self) -> str:
        """The label as printed."""
        parts = [f"{self.method}[{self.variant}]" if self.variant else self.method]
        if self.labelled is not None:
            parts.append(f"L={self.labelled}")
        if self.fold is not None:
            parts.append(f"fold {self.fold}")
        return " ".join(parts)


def trial_labels(specs: Iterable[Any]) -> dict[str, TrialLabel]:
    """Labels of trial specs by trial id; a method's variant names the settings that differ
    between that method's trials (``width=8,alpha=0.002``), so variants tell apart."""
    specs = list(specs)
    settings = {s.trial_id(): s.method.model_dump(mode="json") for s in specs}
    by_method: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        by_method.setdefault(spec.method.name, []).append(settings[spec.trial_id()])
    varying = {name: [k for k in sorted({k for own in group for k in own})
                      if len({repr(own.get(k)) for own in group}) > 1]
               for name, group in by_method.items()}
    labels = {}
    for spec in specs:
        own = settings[spec.trial_id()]
        variant = ",".join(f"{k}={own.get(k)}" for k in varying[spec.method.name])
        labels[spec.trial_id()] = TrialLabel(spec.method.name, variant, spec.protocol.labelled_slices,
                                             spec.protocol.fold, spec.train.epochs)
    return labels


def group_labels(groups: Iterable[dict[str, Any]]) -> dict[str, TrialLabel]:
    """Labels of fused groups (Tune configs' ``trial`` with ``members``) by group id:
    ``mismatch[fused x3]``."""
    return {g["id"]: _group_label(g) for g in groups}


def _group_label(group: dict[str, Any]) -> TrialLabel:
    first = label_from_config({"trial": group["members"][0]})
    return TrialLabel(first.method, f"fused x{len(group['members'])}", epochs=first.epochs)


def members_of(config: dict[str, Any]) -> int:
    """How many study trials a Tune trial trains: a fused group's members, else 1."""
    return len((config.get("trial") or {}).get("members") or [None])


def label_from_config(config: dict[str, Any]) -> TrialLabel:
    """A label from a study trial's Tune config (a trial :func:`trial_labels` did not name)."""
    if "members" in (config.get("trial") or {}):
        return _group_label(config["trial"])
    spec = (config.get("trial") or {}).get("spec") or {}
    method = spec.get("method") or {}
    protocol, train = spec.get("protocol") or {}, spec.get("train") or {}
    return TrialLabel(str(method.get("name", "?")), "", protocol.get("labelled_slices"), protocol.get("fold"),
                      train.get("epochs"))


def eta_seconds(walls: list[float], remaining: int, slots: int) -> float | None:
    """Mean finished-trial wall time x trials left / slots in use (None before any finished).

    Slots in use are ``min(slots, remaining)``: the last trial alone takes a whole trial's time.
    """
    if remaining <= 0:
        return 0.0
    if not walls:
        return None
    return statistics.fmean(walls) * remaining / max(1, min(slots, remaining))


@dataclass
class Running:
    """A trial the driver has seen start and not yet finish."""

    label: TrialLabel
    started: float
    #: When the slot it runs in became free (its wall time counts from here).
    slot_free: float
    epoch: int = 0
    val_iou: float | None = None

    def text(self) -> str:
        """``mismatch[width=8] L=5 fold 1 epoch 2/3 IoU 0.412``."""
        total = self.label.epochs if self.label.epochs is not None else "?"
        iou = f" IoU {self.val_iou:.3f}" if self.val_iou is not None else ""
        return f"{self.label.text()} epoch {self.epoch}/{total}{iou}"


class ProgressTracker:
    """What the run has done so far; the ``on_*`` methods have the signatures of Ray Tune's
    ``Callback`` hooks (:func:`Progress` mixes them into one) and call :meth:`event` with what
    happened; the renderers (:class:`PlainProgress`, :class:`LiveProgress`) show it.

    ``slots`` is how many trials can run at once (None: as many as Tune runs); ``clock`` is
    injectable for tests.
    """

    def __init__(self, study: str, total: int, done: int, slots: int | None = None,
                 labels: dict[str, TrialLabel] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.study, self.total, self.done, self.slots = study, total, done, slots
        self.labels = labels or {}
        self.clock = clock
        self.failed = 0
        self.walls: list[float] = []
        self.trials: dict[str, Running] = {}
        self.running_ids: list[str] = []
        self.max_seen = 1
        self.free_since: deque[float] = deque([clock()] * (slots or 1))

    # -- state ------------------------------------------------------------------------------
    def _sync(self, trials: list[Any] | None, starting: str | None = None) -> None:
        """The trials Tune says are RUNNING (and ``starting``, which Tune marks RUNNING just
        after telling callbacks), never more than the slots."""
        if trials is None:
            return
        running = [t.trial_id for t in trials if str(getattr(t, "status", "")) == "RUNNING"]
        if starting is not None and starting not in running:
            running.append(starting)
        self.max_seen = max(self.max_seen, len(running))
        self.running_ids = running[: self.slots] if self.slots else running

    def _view(self, trial: Any) -> Running:
        view = self.trials.get(trial.trial_id)
        if view is None:
            label = self.labels.get(trial.trial_id) or label_from_config(getattr(trial, "config", {}) or {})
            now = self.clock()
            free = self.free_since.popleft() if self.free_since else now
            view = self.trials[trial.trial_id] = Running(label, now, min(free, now))
        return view

    @property
    def running(self) -> list[Running]:
        """The running trials, as Tune reported them last."""
        return [self.trials[i] for i in self.running_ids if i in self.trials]

    def eta(self) -> float | None:
        """Seconds until every trial has finished (see :func:`eta_seconds`)."""
        slots = self.slots or self.max_seen
        return eta_seconds(self.walls, self.total - self.done - self.failed, slots)

    def summary(self) -> str:
        """``3/12 done, 0 failed, 2 running, ETA 4m10s``."""
        return (f"{self.done}/{self.total} done, {self.failed} failed, {len(self.running_ids)} running, "
                f"ETA {format_eta(self.eta())}")

    # -- Tune hooks ---------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        view = self._view(trial)  # a retried trial keeps its first start: its wall time includes the retry
        self._sync(trials, starting=trial.trial_id)
        self.event(f"started {view.label.text()}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "epoch" not in result:
            return  # the final report: on_trial_complete says it
        view = self._view(trial)
        view.epoch = int(result["epoch"])
        value = result.get(VAL_METRIC)
        view.val_iou = float(value) if isinstance(value, (int, float)) else view.val_iou
        self._sync(trials)
        self.event(view.text())

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._sync(trials)
        self.event(f"retrying {self._view(trial).label.text()} (its worker failed)")

    def _finish(self, trial: Any, trials: list | None) -> tuple[Running, float]:
        view = self._view(trial)
        self.trials.pop(trial.trial_id, None)
        self._sync(trials)
        self.running_ids = [i for i in self.running_ids if i != trial.trial_id]
        now = self.clock()
        self.free_since.append(now)
        return view, now - view.slot_free

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        view, wall = self._finish(trial, trials)
        result = getattr(trial, "last_result", None) or {}
        # counts are of study trials: a fused group reports how many of its members failed
        members = int(result.get("members", 1))
        failed = int(result.get("members_failed", members if result.get("status_failed") else 0))
        self.failed += failed
        if failed:
            error = str(result.get("error", "?")).strip().splitlines() or ["?"]
            self.event(f"failed {view.label.text()}{f' ({failed} of {members})' if members > 1 else ''}: "
                       f"{error[0][:200]}")
        if failed == members:
            return
        self.done += members - failed
        self.walls.extend([wall / members] * (members - failed))  # per trial: a group trains its members at once
        self.event(f"finished {view.label.text()} in {format_eta(wall)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        view, _ = self._finish(trial, trials)
        self.failed += members_of(getattr(trial, "config", {}) or {})
        self.event(f"failed {view.label.text()} (retries exhausted)")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._sync(trials)
        self.tick()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    # -- output (overridden by the renderers) ----------------------------------------------------
    def event(self, what: str) -> None:
        """Something happened to one trial."""

    def tick(self) -> None:
        """Called on every step of Tune's loop (several times a second)."""

    def close(self) -> None:
        """The run is over."""


class PlainProgress(ProgressTracker):
    """Timestamped lines: one per event, and one every :data:`HEARTBEAT_S` s while trials run."""

    def __init__(self, study: str, total: int, done: int, stream: TextIO, slots: int | None = None,
                 labels: dict[str, TrialLabel] | None = None, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(study, total, done, slots, labels, clock)
        self.stream, self.wall_clock = stream, wall_clock
        self.last_line = clock()

    def _print(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.wall_clock()))
        print(f"{stamp} [{self.study}] {text}", file=self.stream, flush=True)
        self.last_line = self.clock()

    def event(self, what: str) -> None:
        self._print(f"{what} | {self.summary()}")

    def tick(self) -> None:
        if self.running_ids and self.clock() - self.last_line >= HEARTBEAT_S:
            running = "; ".join(r.text() for r in self.running)
            self._print(f"{self.summary()} | running: {running}")


class LiveProgress(ProgressTracker):
    """A live table on a terminal (rich): the summary and one row per running trial."""

    def __init__(self, study: str, total: int, done: int, stream: TextIO, slots: int | None = None,
                 labels: dict[str, TrialLabel] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(study, total, done, slots, labels, clock)
        self.stream = stream
        self.live: Any = None
        self.rendered = float("-inf")

    def render(self) -> Any:
        """The table shown now."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(expand=False)
        for column in ("trial", "epoch", "val IoU", "for"):
            table.add_column(column)
        now = self.clock()
        for r in self.running:
            total = r.label.epochs if r.label.epochs is not None else "?"
            iou = f"{r.val_iou:.3f}" if r.val_iou is not None else "-"
            table.add_row(Text(r.label.text()), f"{r.epoch}/{total}", iou, format_eta(now - r.started))  # no markup
        summary = Text(f"[{self.study}] {self.summary()}")
        return Group(summary, table) if self.running_ids else summary

    def _refresh(self) -> None:
        self.rendered = self.clock()
        if self.live is None:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self.render(), console=Console(file=self.stream), refresh_per_second=2, transient=False)
            self.live.start()
        else:
            self.live.update(self.render())

    def event(self, what: str) -> None:
        self._refresh()
        if what.startswith(("finished", "failed", "retrying")):
            self.live.console.print(f"[{self.study}] {what}", markup=False, highlight=False)

    def tick(self) -> None:
        if self.clock() - self.rendered >= 1.0:  # Tune steps ~10 times a second; the clocks tick by seconds
            self._refresh()

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.stop()
            self.live = None


@functools.cache
def _callback_class(base: type) -> type:
    from ray.tune import Callback

    return type(base.__name__, (base, Callback), {"__doc__": base.__doc__, "__module__": __name__})


def Progress(study: str, total: int, done: int, stream: TextIO, slots: int | None = None,  # noqa: N802
             labels: dict[str, TrialLabel] | None = None, live: bool | None = None) -> Any:
    """The study's progress as a Ray Tune ``Callback`` (imports Ray on the first call): a live
    table when ``live`` (by default: ``stream`` is a terminal), plain lines otherwise."""
    live = stream.isatty() if live is None else live
    base = LiveProgress if live else PlainProgress
    return _callback_class(base)(study, total, done, stream, slots, labels)
