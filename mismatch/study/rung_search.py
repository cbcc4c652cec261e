"""The Ray side of multi-fidelity and budgeted searches (:mod:`mismatch.study.rungs`).

:class:`RungSearch` is Ray's OptunaSearch with three changes: it hands each candidate its
Optuna trial id (the worker reports rungs and asks the pruner itself), it does not copy Tune's
intermediate results into Optuna (the worker already did, once per rung), and it tells a
candidate that ended without the objective as PRUNED, or as FAIL where it failed. With a
budget in trial-epochs or device-hours it starts no candidate once the method has spent it.
:func:`candidate_fn` is the trainable: one candidate, all its runs, rung by rung.

Imported by the search driver and by Ray's workers only (it imports Ray).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from mismatch.config import SpecError, TrialSpec
from mismatch.study.optuna_store import tune_key
from mismatch.study.rungs import (
    TRIAL_ID_KEY,
    CandidateRuns,
    Pause,
    Pruned,
    Rungs,
    RunProgress,
    budget_left,
    objective_of,
    resume_progress,
)
from mismatch.study.store import TrialCheckpoint, completed_trials, read_table, write_result, write_trial
from mismatch.study.study_file import SearchSpec

if TYPE_CHECKING:
    from mismatch.study.search import Candidate as SearchCandidate


class RungSearch(OptunaSearch):
    """OptunaSearch for candidates that report their own rungs (see the module docstring)."""

    def __init__(self, *args: Any, pruner: Any = None, budget: SearchSpec | None = None, **kwargs: Any) -> None:
        self._rung_pruner = pruner
        self._budget = budget
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        if self._rung_pruner is not None:  # TPE samples per Hyperband bracket when the study's pruner is one
            self._ot_study.pruner = self._rung_pruner

    def suggest(self, trial_id: str) -> dict | str | None:
        """The next candidate's values and Optuna trial id; FINISHED once the budget is spent."""
        if self._budget is not None and trial_id not in self._ot_trials and not budget_left(
                self._ot_study.get_trials(deepcopy=False), self._budget):
            return Searcher.FINISHED
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            # The storage id, not the number: Trial(study, id) opens it on the worker (no public getter).
            config[TRIAL_ID_KEY] = self._ot_trials[trial_id]._trial_id
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Nothing: the candidate reported its rung to Optuna itself."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """COMPLETE with the objective; PRUNED where a rung stopped it; FAIL where it failed."""
        if result and result.get("status_failed"):
            result, error = None, True
        super().on_trial_complete(trial_id, result=result, error=error)


def candidate_fn(config: dict[str, Any], storage: str, threads: int, spec_of: SearchCandidate, rungs: Rungs) -> None:
    """The trainable of a multi-fidelity search: every run of one candidate, rung by rung.

    A finished candidate stores each run's rows as a study trial does and reports the
    objective; a pruned one stores ``pruned`` rows (epochs and time trained) and reports
    ``pruned`` without the objective, which :class:`RungSearch` tells Optuna as PRUNED."""
    from mismatch.results.rows import fusion_columns
    from mismatch.runtime import set_threads
    from mismatch.study.worker import placement

    set_threads(threads)
    try:
        values = {p: config[tune_key(p)] for p in spec_of.params}
        specs = [spec_of.spec(values, fold, seed) for fold, seed in spec_of.runs]
    except (SpecError, ValidationError) as err:
        tune.report({"status_failed": 1, "error": f"{type(err).__name__}: {err}"})
        return
    trial = rungs.open_trial(int(config[TRIAL_ID_KEY]))
    candidate = CandidateRuns([RunProgress(s) for s in specs], rungs, trial, tune.report)
    train_candidate(candidate, storage, {**placement(), **fusion_columns()})


def train_candidate(candidate: CandidateRuns, storage: str, extra: dict[str, Any] | None = None) -> None:
    """Train the candidate's runs to each rung in turn, store their rows (plus ``extra``
    columns: where it ran), report the outcome."""
    from mismatch.study.worker import write_failed_row
    from mismatch.trial.members import snapshot_epochs
    from mismatch.trial.run import run_trial
    from mismatch.trial.state import PERMANENT_ERRORS

    study = candidate.runs[0].spec.study
    done = completed_trials(storage, study, [r.spec.trial_id() for r in candidate.runs])
    checkpoints = {}
    for run in candidate.runs:
        checkpoints[id(run)] = ckpt = TrialCheckpoint(storage, study, run.spec.trial_id())
        resume_progress(run, Path(ckpt.fetch()))
        run.done = run.spec.trial_id() in done
        if run.done and not run.history:  # stored, its checkpoint cleaned, the kill before the report
            run.history = stored_history(storage, study, run.spec.trial_id())
    try:
        while (run := candidate.next_run()) is not None:
            ckpt = checkpoints[id(run)]
            try:
                result = run_trial(run.spec, on_epoch_end=_pushing(candidate.hook(run), ckpt),
                                   checkpoint_dir=Path(ckpt.fetch()))
            except Pause:
                continue
            write_result(storage, result, extra)
            run.done = True
    except Pruned as pruned:
        _store_pruned(candidate, storage, str(pruned))
        _clean(checkpoints.values())
        candidate.spend()
        candidate.report({"pruned": 1, "rung": pruned.epoch, "trial_epochs": candidate.epochs})
        return
    except PERMANENT_ERRORS as err:  # the run that failed gets a study trial's failed row
        write_failed_row(storage, run.spec, err, extra)
        _clean(checkpoints.values())
        candidate.report({"status_failed": 1, "error": f"{type(err).__name__}: {err}"})
        return
    _clean(checkpoints.values())
    candidate.spend()
    k = snapshot_epochs(candidate.runs[0].spec)  # the epochs of the test-time snapshots, as search_objective scores them
    candidate.report({"val_iou": objective_of(candidate.runs, k), "trial_epochs": candidate.epochs, "done_trial": 1})


def stored_history(storage: str, study: str, trial_id: str) -> list[dict[str, Any]]:
    """A stored run's per-epoch history (``epoch``, ``time_s``, ``val_iou``) from its epochs rows:
    what its cleaned checkpoint held, for a candidate whose report a kill cut off."""
    epochs = read_table(storage, study, "epochs", columns=["trial_id", "epoch", "time_s", "val_iou"])
    mine = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
    return [{"epoch": int(e), "time_s": float(t), "val_iou": float(v)}
            for e, t, v in zip(mine["epoch"], mine["time_s"], mine["val_iou"], strict=True)]


def _pushing(hook: Any, ckpt: TrialCheckpoint) -> Any:
    """The hook, after copying the epoch's checkpoint up (object storage; a no-op on a path)."""
    def on_epoch_end(report: Any) -> None:
        ckpt.push()
        hook(report)

    return on_epoch_end


def _store_pruned(candidate: CandidateRuns, storage: str, reason: str) -> None:
    from mismatch.trial.evaluate import pruned_trial_row

    for run in candidate.runs:  # none is done: a run passes a rung only after the candidate did
        spec: TrialSpec = run.spec
        write_trial(storage, spec.study, spec.trial_id(), pruned_trial_row(spec, reason, run.epochs, run.seconds))


def _clean(checkpoints: Any) -> None:
    for ckpt in checkpoints:
        ckpt.delete()
