"""Multi-fidelity searches: candidates stopped at rungs by Optuna's own pruners.

With ``search.scheduler: asha`` or ``hyperband`` a candidate is ONE Ray Tune trial that trains
all of its training runs (folds x seeds) together, rung by rung: every run trains to the
rung's epoch (the others wait, paused on their checkpoints), the candidate reports the mean
validation IoU of its runs at that epoch to its Optuna trial (``trial.report``), and Optuna's
pruner decides (``trial.should_prune``): ``asha`` is Optuna's SuccessiveHalvingPruner (the
asynchronous successive halving of Li et al., MLSys 2020), ``hyperband`` its HyperbandPruner
(Li et al., JMLR 2018), both with rungs at ``grace x reduction_factor^k`` epochs. A pruned
candidate is told to Optuna as PRUNED (never COMPLETE with a partial score): its runs get
``pruned`` trial rows with the epochs they trained, and no test row. A candidate that passes
every rung trains to the full budget and is scored like any other (:func:`search_objective`).

Why Optuna's pruners rather than Tune's ASHAScheduler: Tune's scheduler stops a Tune trial
from outside and Ray's OptunaSearch then tells Optuna the trial's last intermediate score as
COMPLETE; a pruner inside the trial decides on the candidate's mean over all its runs and
leaves the state to Optuna, whose dashboard shows pruned trials as pruned (docs/studies.md).

The worker keeps each run's progress in its own checkpoint (epochs and validation scores
are read back from it), so a killed search resumes every run from its last epoch and never
trains a finished rung again; the rung values already reported are read from the Optuna study.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mismatch.study.study_file import SearchSpec

if TYPE_CHECKING:
    from mismatch.config import TrialSpec

#: The Tune report key of a candidate's rung value (never Optuna's objective key: a candidate
#: whose last report lacks the objective is told as PRUNED, :mod:`mismatch.study.rung_search`).
RUNG_METRIC = "rung_val_iou"
#: The Tune config key carrying the candidate's Optuna trial id (its storage id).
TRIAL_ID_KEY = "__optuna_trial_id__"
#: Optuna user attributes a candidate keeps current: what it has spent (the budget reads them).
EPOCHS_ATTR, SECONDS_ATTR = "trial_epochs", "train_s"
SCHEDULERS = ("none", "asha", "hyperband")


def rung_epochs(grace: int, factor: int, epochs: int) -> list[int]:
    """The rung epochs below the full budget: ``grace x factor^k`` < ``epochs``."""
    rungs, epoch = [], grace
    while epoch < epochs:
        rungs.append(epoch)
        epoch *= factor
    return rungs


def ramp_epochs(spec: TrialSpec) -> int:
    """The longest ramp-up of the method's config in epochs (its ``*rampup_epochs`` settings;
    None: a ramp over the whole run), 0 where it declares none."""
    values = [v for k, v in spec.method.model_dump().items() if k.endswith("rampup_epochs")]
    return max((spec.train.epochs if v is None else int(v) for v in values), default=0)


def method_grace(search: SearchSpec, method: str, spec: TrialSpec) -> int:
    """Epochs before ``method``'s first rung: ``grace_epochs`` (its own entry where the file
    names it per method), raised to its consistency ramp-up, so that a candidate whose
    unlabelled loss is still ramping up is never judged against one whose loss is full."""
    grace = search.grace_epochs
    if isinstance(grace, dict):
        if method in grace:
            return grace[method]
        grace = grace.get("default", 1)
    return max(grace, ramp_epochs(spec))


@dataclass(frozen=True)
class Rungs:
    """One method's multi-fidelity settings, as the driver and its workers both use them."""

    scheduler: str
    grace: int
    factor: int
    epochs: int
    optuna_name: str
    search: SearchSpec
    storage: str
    study: str

    @property
    def epochs_list(self) -> list[int]:
        """The rung epochs (none without a scheduler: only the full budget's score)."""
        return [] if self.scheduler == "none" else rung_epochs(self.grace, self.factor, self.epochs)

    def pruner(self) -> Any:
        """The Optuna pruner of this method's study."""
        import optuna

        if self.scheduler == "asha":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=self.grace, reduction_factor=self.factor)
        if self.scheduler == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=self.grace, max_resource=self.epochs,
                                                  reduction_factor=self.factor)
        return optuna.pruners.NopPruner()

    def describe(self) -> str:
        """One line for the search's start: scheduler, grace and rungs."""
        if self.scheduler == "none":
            return "no pruning (every candidate trains its full budget)"
        rungs = ", ".join(map(str, self.epochs_list)) or "none below the budget: no candidate can be pruned"
        return f"{self.scheduler}: grace {self.grace} epochs, reduction factor {self.factor}, rungs at epochs {rungs}"

    def open_trial(self, trial_id: int) -> Any:
        """The candidate's Optuna trial, opened on its worker from the shared storage."""
        import optuna

        from mismatch.study.optuna_store import optuna_storage

        storage = optuna_storage(self.search, self.storage, self.study)
        study = optuna.load_study(study_name=self.optuna_name, storage=storage, pruner=self.pruner())
        return optuna.trial.Trial(study, trial_id)


def spent(trials: list[Any], search: SearchSpec) -> float:
    """What a method's Optuna trials have spent, in the budget's unit (trial-epochs or hours)."""
    if search.budget_hours is not None:
        return sum(float(t.user_attrs.get(SECONDS_ATTR, 0.0)) for t in trials) / 3600.0
    return float(sum(int(t.user_attrs.get(EPOCHS_ATTR, 0)) for t in trials))


def budget_left(trials: list[Any], search: SearchSpec) -> bool:
    """Whether a new candidate may start: the method has spent less than its budget."""
    limit = search.budget_hours if search.budget_hours is not None else search.budget_epochs
    return limit is None or spent(trials, search) < limit


class Pause(Exception):
    """A run reached a rung before the candidate's other runs: it waits on its checkpoint."""


class Pruned(Exception):
    """The pruner stopped the candidate at ``epoch`` (its rung value ``value``)."""

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"pruned at epoch {epoch}: rung validation IoU {value:.4f}")
        self.epoch, self.value = epoch, value


@dataclass
class RunProgress:
    """One training run of a candidate: its spec, its epochs so far and, once stored, done."""

    spec: TrialSpec
    history: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    @property
    def epochs(self) -> int:
        """Epochs trained (checkpointed)."""
        return len(self.history)

    @property
    def seconds(self) -> float:
        """Training seconds of those epochs."""
        return float(sum(h.get("time_s", 0.0) for h in self.history))

    def val_at(self, epoch: int) -> float:
        """Validation IoU after ``epoch`` epochs (1-based)."""
        return float(self.history[epoch - 1]["val_iou"])


@dataclass
class CandidateRuns:
    """A candidate's runs and the rung decisions between them (the worker side of a search)."""

    runs: list[RunProgress]
    rungs: Rungs
    trial: Any
    report: Callable[[dict[str, Any]], None]

    def hook(self, run: RunProgress) -> Callable[[Any], None]:
        """``run``'s epoch hook: record the epoch; at a rung, wait for the others or decide."""
        def on_epoch_end(report: Any) -> None:
            run.history.append({"epoch": report.epoch, "time_s": report.time_s, **report.val})
            epoch = run.epochs
            if epoch not in self.rungs.epochs_list:
                return
            if any(other.epochs < epoch for other in self.runs if other is not run):
                raise Pause
            self.decide(epoch)

        return on_epoch_end

    def decide(self, epoch: int) -> None:
        """Every run is at rung ``epoch``: report their mean to Optuna; raise :class:`Pruned` if it says so."""
        value = sum(r.val_at(epoch) for r in self.runs) / len(self.runs)
        with warnings.catch_warnings():  # a candidate resumed after a kill reported this rung already: Optuna keeps the first
            warnings.filterwarnings("ignore", message=".*already reported.*")
            self.trial.report(value, epoch)
        self.spend()
        self.report({RUNG_METRIC: value, "rung": epoch, EPOCHS_ATTR: self.epochs})
        if self.trial.should_prune():
            raise Pruned(epoch, value)

    @property
    def epochs(self) -> int:
        """Trial-epochs trained by the candidate's runs so far."""
        return sum(r.epochs for r in self.runs)

    def spend(self) -> None:
        """Keep the candidate's spend current in its Optuna trial (the driver's budget reads it)."""
        self.trial.set_user_attr(EPOCHS_ATTR, self.epochs)
        self.trial.set_user_attr(SECONDS_ATTR, sum(r.seconds for r in self.runs))

    def next_run(self) -> RunProgress | None:
        """The unfinished run furthest behind (None: all stored)."""
        todo = [r for r in self.runs if not r.done]
        return min(todo, key=lambda r: r.epochs) if todo else None


def resume_progress(run: RunProgress, checkpoint: Path) -> None:
    """A run's epochs so far, read from its checkpoint (a resumed or paused run)."""
    from mismatch.trial.checkpoint import checkpoint_history

    path = checkpoint / "trial.pt"
    if path.exists():
        run.history = [{"epoch": h["epoch"], "time_s": h.get("time_s", 0.0), "val_iou": h["val_iou"]}
                       for h in checkpoint_history(path)]


def objective_of(runs: list[RunProgress], k: int) -> float:
    """The candidate's score: the mean over its runs of the validation IoU of its last ``k`` epochs."""
    values = [sum(r.val_at(e) for e in range(r.epochs - k + 1, r.epochs + 1)) / k for r in runs]
    return sum(values) / len(values) if values and all(math.isfinite(v) for v in values) else float("nan")
