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
from pathlib import Path
from typing import Any, TextIO

from mismatch.config import SpecError, TrialSpec
from mismatch.study.best import read_best  # noqa: F401  (re-exported)
from mismatch.study.runner import PERMANENT_ERRORS, effective_resources, init_ray
from mismatch.study.spec import SearchSpec, Study, deep_merge, method_variants
from mismatch.study.store import (
    TrialCheckpoint,
    _write_atomic,
    absolute_storage,
    resolve,
    write_result,
    write_trial,
)
from mismatch.train import failed_trial_row, run_trial

OBJECTIVE = "val_iou"


def base_payload(study: Study) -> dict[str, Any]:
    """The trial every candidate starts from: the base, the first method, the first grid point."""
    grid = study.file.grid
    point = {"labelled_slices": (grid.labelled_slices or [None])[0], "seed": (grid.seed or [None])[0]}
    tree = deep_merge(study.file.base, {"study": study.name, "method": method_variants(study.file.methods[0])[0]})
    if point["labelled_slices"] is not None:
        tree.setdefault("protocol", {})["labelled_slices"] = point["labelled_slices"]
    if point["seed"] is not None:
        tree.setdefault("train", {})["seed"] = point["seed"]
    return tree


def candidate_spec(base: dict[str, Any], param: str, value: float, fold: int, source: str) -> TrialSpec:
    """The trial spec of one (candidate value, fold) pair."""
    from mismatch.config import load_trial_spec

    tree = deep_merge(base, {"method": {param: value}, "protocol": {"fold": fold}})
    return load_trial_spec(tree, source=source)


def validation_objective(epochs: Any, k: int) -> float:
    """Mean validation IoU over the last ``k`` epochs (those of the test-time snapshots)."""
    return float(epochs[OBJECTIVE].tail(k).mean())


def search_trial_fn(config: dict[str, Any], storage: str, threads: int, base: dict[str, Any], search: dict[str, Any],
                    source: str) -> None:
    """The Ray Tune trainable of a search: one candidate on one fold."""
    from ray import tune

    from mismatch.runtime import set_threads

    set_threads(threads)
    fold = search["folds"][config["__trial_index__"]]
    spec = candidate_spec(base, search["param"], config[search["param"]], fold, source)
    ckpt = TrialCheckpoint(storage, spec.study, spec.trial_id())
    local = ckpt.fetch()
    try:
        result = run_trial(spec, checkpoint_dir=Path(local),
                           on_epoch_end=lambda r: (ckpt.push(), tune.report({"epoch": r.epoch + 1, **r.val})))
    except PERMANENT_ERRORS as err:
        write_trial(storage, spec.study, spec.trial_id(), failed_trial_row(spec, err))
        ckpt.delete()
        raise
    write_result(storage, result)
    ckpt.delete()
    k = 1 if spec.train.snapshot == "final" else spec.train.snapshot_k
    tune.report({OBJECTIVE: validation_objective(result.epochs, k), "fold": fold})


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

    search = study.file.search
    if search is None:
        raise SpecError(f"{study.source}: a search needs a 'search:' section")
    storage = study.storage if storage is None else absolute_storage(storage)
    init_ray(address, verbose)
    experiment = f"{storage}/{study.name}/_ray/search"
    resources = effective_resources(study)
    trainable = tune.with_resources(
        tune.with_parameters(search_trial_fn, storage=storage, threads=max(1, int(resources["cpu"])),
                             base=base_payload(study), search=search.model_dump(), source=study.source),
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


