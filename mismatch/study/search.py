"""`mismatch search alpha`: an Optuna (TPE) search of one method setting on Ray Tune.

Each candidate value is evaluated on K folds (Ray's ``Repeater``; Optuna receives the mean)
by the mean VALIDATION IoU of the epochs whose snapshots form the test-time ensemble — the
test cases are never looked at to choose. The paper's value is enqueued first, the budget is
fixed (no early stopping: ASHA-stopped trials would be told to Optuna as complete), the
Optuna study is persisted in a journal file (or an RDB URL) that the ``optuna`` CLI and
optuna-dashboard open, an interrupted search resumes, and the best value is written to
``<storage>/<study>/best.json`` where a follow-up study names it (``alpha: {best_of: NAME}``).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mismatch.config import SpecError, TrialSpec
from mismatch.study.best import read_best  # noqa: F401  (re-exported)
from mismatch.study.spec import SearchSpec, Study, method_variants
from mismatch.study.store import _write_atomic, absolute_storage, resolve

if TYPE_CHECKING:  # a study naming ``best_of`` reads best.json here: no torch, no Ray
    from mismatch.train import TrialResult

OBJECTIVE = "val_iou"


@dataclass(frozen=True)
class Candidate:
    """Builds a candidate's trial spec on the worker from its Tune config.

    A candidate is the study's trial of its first method variant at its first grid point, on
    fold ``folds[__trial_index__]`` (Ray's ``Repeater``), with the searched setting
    overridden: the same :meth:`Study.trial` a study run uses.
    """

    study: Study
    param: str
    folds: tuple[int, ...]

    def __call__(self, config: dict[str, Any]) -> TrialSpec:
        return self.spec(config[self.param], self.folds[config["__trial_index__"]])

    def spec(self, value: float, fold: int) -> TrialSpec:
        """The trial spec of one (candidate value, fold) pair."""
        method = method_variants(self.study.file.methods[0])[0]
        point = {**self.study.first_point(), "fold": fold}
        return self.study.trial(method, point, overrides={"method": {self.param: value}})


def validation_objective(epochs: Any, k: int) -> float:
    """Mean validation IoU over the last ``k`` epochs (those of the test-time snapshots)."""
    return float(epochs[OBJECTIVE].tail(k).mean())


def search_objective(spec: TrialSpec, result: TrialResult) -> dict[str, float]:
    """What a finished candidate reports for Optuna: validation IoU of its snapshot epochs."""
    k = 1 if spec.train.snapshot == "final" else spec.train.snapshot_k
    return {OBJECTIVE: validation_objective(result.epochs, k), "fold": spec.protocol.fold}


def optuna_storage(search: SearchSpec, storage: str, study: str) -> Any:
    """The study's Optuna storage: an RDB URL, or a journal file in the results folder."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if search.storage and "://" in search.storage and not search.storage.startswith("file://"):
        return search.storage  # an RDB URL (postgresql://, mysql://)
    if "://" in storage and not search.storage:
        raise SpecError("an Optuna journal needs a shared filesystem path; on object storage set search.storage "
                        "to an RDB URL")
    path = Path(search.storage.removeprefix("file://")) if search.storage else Path(storage) / study / "optuna" / "journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _searcher(search: SearchSpec, study: str, storage: Any) -> Any:
    import optuna
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    dist = optuna.distributions.FloatDistribution(search.low, search.high, log=search.log)
    inner = OptunaSearch(
        space={search.param: dist}, metric=OBJECTIVE, mode="max",
        points_to_evaluate=[{search.param: v} for v in search.enqueue],
        sampler=optuna.samplers.TPESampler(seed=search.sampler_seed), study_name=study, storage=storage,
    )
    return Repeater(inner, repeat=len(search.folds), set_index=True)


def run_search(study: Study, storage: str | None = None, address: str | None = None, verbose: bool = False,
               stream: TextIO = sys.stdout) -> dict[str, Any]:
    """Run (or resume) the study's search; returns and writes the best value."""
    from ray import tune

    from mismatch.study.runner import effective_resources, init_ray, trial_fn

    search = study.file.search
    if search is None:
        raise SpecError(f"{study.source}: a search needs a 'search:' section")
    storage = study.storage if storage is None else absolute_storage(storage)
    candidate = Candidate(study, search.param, tuple(search.folds))
    for fold in search.folds:  # a spec error shows here, not once per candidate on a worker
        candidate.spec(search.low, fold)
    init_ray(address, verbose)
    experiment = f"{storage}/{study.name}/_ray/search"
    resources = effective_resources(study)
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, storage=storage, threads=max(1, int(resources["cpu"])),
                             spec_of=candidate, objective=search_objective),
        resources,
    )
    print(f"[{study.name}] searching {search.param} in [{search.low}, {search.high}]: {search.candidates} candidates "
          f"x {len(search.folds)} folds", file=stream, flush=True)
    if tune.Tuner.can_restore(experiment):
        print(f"[{study.name}] resuming the interrupted search", file=stream, flush=True)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=_searcher(search, study.name, optuna_storage(search, storage, study.name)),
                                        num_samples=search.candidates * len(search.folds),
                                        max_concurrent_trials=study.file.max_concurrent),
            run_config=tune.RunConfig(name="search", storage_path=f"{storage}/{study.name}/_ray",
                                      failure_config=tune.FailureConfig(max_failures=study.file.max_failures),
                                      verbose=1 if verbose else 0),
        )
    tuner.fit()
    return write_best(study, storage, search)


def write_best(study: Study, storage: str, search: SearchSpec) -> dict[str, Any]:
    """Read the best candidate from the Optuna study and write ``best.json`` atomically."""
    import optuna

    ot = optuna.load_study(study_name=study.name, storage=optuna_storage(search, storage, study.name))
    done = [t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise RuntimeError(f"search {study.name}: no candidate completed")
    best = max(done, key=lambda t: t.value)
    payload = {"param": search.param, "value": best.params[search.param], "mean_val_iou": best.value,
               "folds": search.folds, "candidates": len(done), "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    fs, root = resolve(storage)
    _write_atomic(fs, f"{root}/{study.name}/best.json", json.dumps(payload, indent=2).encode())
    return payload


