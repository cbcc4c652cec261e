"""`mismatch search`: Optuna (TPE) searches of method settings on Ray Tune, one per method.

``mismatch search FILE`` tunes every method of the study file, each in its own Optuna study
with the SAME budget (``candidates`` x ``folds`` trials) over the space the method's config
declares (:attr:`search_space`, plus the shared ``train.lr``; ``search.params`` picks a
subset). ``mismatch search alpha FILE`` tunes alpha of the first method, as before. Each
candidate is evaluated on K folds (Ray's ``Repeater``; Optuna receives the mean) by the mean
VALIDATION IoU of the epochs whose snapshots form the test-time ensemble. With a held-out
tuning split (``protocol.tuning_cases``), candidates are scored on the set-aside cases, which
no fold of the table tests on (docs/studies.md). The method's own values (the paper's) are
enqueued first. With ``search.scheduler: asha | hyperband``, or a budget in trial-epochs or
device-hours, a candidate is one Tune trial that trains all its runs and is pruned at rungs by
Optuna's own pruner (:mod:`mismatch.study.rungs`); without, every candidate trains its full
budget. The Optuna studies are persisted in a journal file (or an RDB URL), an interrupted
search resumes, and ``<storage>/<study>/best.json`` records per method the best values, the
objective, the folds, the validation cases scored and the search's cost, pruned candidates
included; a study names it (``alpha: {best_of: NAME}`` or ``tuned: NAME``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from mismatch.config import METHODS, SpecError, TrialSpec
from mismatch.search_space import Choice, Dimension, IntRange, Uniform, method_space, overrides_of
from mismatch.study.best import read_best  # noqa: F401  (re-exported)
from mismatch.study.lock import STALE_AFTER_S, StudyLock
from mismatch.study.optuna_store import optuna_storage, tune_key
from mismatch.study.rungs import Rungs, method_grace
from mismatch.study.store import _write_atomic, absolute_storage, read_table, resolve
from mismatch.study.study_file import SearchSpec, deep_merge
from mismatch.study.trials import Study, method_variants

if TYPE_CHECKING:  # a study naming ``best_of`` reads best.json here: no torch, no Ray
    from mismatch.trial.state import TrialResult

OBJECTIVE = "val_iou"
#: The setting ``mismatch search alpha`` tunes (of the study's first method).
ALPHA = "alpha"


@dataclass(frozen=True)
class Candidate:
    """Builds a candidate's trial spec on the worker from its Tune config.

    A candidate is the study's trial of ``method`` (default: the first variant of the first
    method) at its first grid point, on fold ``folds[__trial_index__]`` (Ray's ``Repeater``),
    with the searched settings (``param``: one name or several) overridden: the same
    :meth:`Study.trial` a study run uses. With a held-out tuning split it validates on the
    set-aside cases (``protocol.validate_on: tuning``).
    """

    study: Study
    param: str | tuple[str, ...]
    folds: tuple[int, ...]
    method: dict[str, Any] | None = None
    seeds: tuple[int | None, ...] = (None,)
    """Training seeds each candidate is scored with (None: the grid's first seed)."""

    @property
    def params(self) -> tuple[str, ...]:
        """The searched settings' names."""
        return (self.param,) if isinstance(self.param, str) else tuple(self.param)

    def __call__(self, config: dict[str, Any]) -> TrialSpec:
        values = {p: config[tune_key(p)] for p in self.params}
        fold, seed = self.runs[config["__trial_index__"]]
        return self.spec(values, fold, seed)

    @property
    def runs(self) -> list[tuple[int, int | None]]:
        """The (fold, seed) training runs that score one candidate, in Repeater order."""
        return [(fold, seed) for seed in self.seeds for fold in self.folds]

    def spec(self, value: Any, fold: int, seed: int | None = None) -> TrialSpec:
        """The trial spec of one (candidate, fold, seed); ``value``: a dict, or the one setting's value."""
        values = value if isinstance(value, dict) else {self.params[0]: value}
        method = self.method if self.method is not None else method_variants(self.study.file.methods[0])[0]
        point = {**self.study.first_point(), "fold": fold, **({"seed": seed} if seed is not None else {})}
        overrides = overrides_of(values)
        if (self.study.file.base.get("protocol") or {}).get("tuning_cases"):
            overrides = deep_merge(overrides, {"protocol": {"validate_on": "tuning"}})
        return self.study.trial(method, point, overrides=overrides)


@dataclass
class MethodSearch:
    """One method's search: its Optuna study, its space and the values tried first."""

    label: str
    method: dict[str, Any]
    space: dict[str, Dimension]
    optuna_name: str
    experiment: str
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    rungs: Rungs | None = None
    """Its scheduler, grace and rung epochs (set when the search starts)."""


def validation_objective(epochs: Any, k: int) -> float:
    """Mean validation IoU over the last ``k`` epochs (those of the test-time snapshots)."""
    return float(epochs[OBJECTIVE].tail(k).mean())


def search_objective(spec: TrialSpec, result: TrialResult) -> dict[str, float]:
    """What a finished candidate reports for Optuna: validation IoU of its snapshot epochs."""
    k = 1 if spec.train.snapshot == "final" else spec.train.snapshot_k
    return {OBJECTIVE: validation_objective(result.epochs, k), "fold": spec.protocol.fold}


def distribution(dim: Dimension) -> Any:
    """The Optuna distribution of a declared dimension."""
    import optuna

    if isinstance(dim, Uniform):
        return optuna.distributions.FloatDistribution(dim.low, dim.high, log=dim.log)
    if isinstance(dim, IntRange):
        return optuna.distributions.IntDistribution(dim.low, dim.high, step=dim.step)
    if isinstance(dim, Choice):
        return optuna.distributions.CategoricalDistribution(list(dim.choices))
    raise TypeError(f"unknown search dimension {dim!r}")


def _searcher(search: SearchSpec, plan: MethodSearch, storage: Any, concurrent: int = 1) -> Any:
    import optuna
    from ray.tune.search import ConcurrencyLimiter, Repeater
    from ray.tune.search.optuna import OptunaSearch

    kwargs = dict(
        space={tune_key(p): distribution(d) for p, d in plan.space.items()}, metric=OBJECTIVE, mode="max",
        points_to_evaluate=[{tune_key(p): v for p, v in point.items()} for point in plan.enqueue] or None,
        sampler=optuna.samplers.TPESampler(seed=search.sampler_seed), study_name=plan.optuna_name, storage=storage,
    )
    if not multi_fidelity(search):
        return Repeater(OptunaSearch(**kwargs), repeat=repeats(search), set_index=True)
    from mismatch.study.rung_search import RungSearch

    searcher = RungSearch(pruner=plan.rungs.pruner(), budget=search if search.budgeted else None, **kwargs)
    # A budget is checked when a candidate starts: at most the slots' candidates run past it.
    return ConcurrencyLimiter(searcher, max_concurrent=concurrent) if search.budgeted else searcher


def _num_samples(search: SearchSpec) -> int:
    """Tune trials: candidates x runs (Repeater); one per candidate when multi-fidelity; with a
    budget and no ``candidates`` in the file, as many as the budget allows (-1)."""
    if not multi_fidelity(search):
        return search.candidates * repeats(search)
    return search.candidates if "candidates" in search.model_fields_set or not search.budgeted else -1


def _budget_words(search: SearchSpec) -> str:
    if search.budget_epochs is not None:
        return f"a budget of {search.budget_epochs} trial-epochs"
    if search.budget_hours is not None:
        return f"a budget of {search.budget_hours:g} device-hours"
    return f"{search.candidates} candidates"


def repeats(search: SearchSpec) -> int:
    """Training runs per candidate: folds x seeds (Optuna receives their mean)."""
    return len(search.folds) * len(search.seeds or [None])


def alpha_plan(study: Study) -> list[MethodSearch]:
    """``mismatch search alpha``: the first method's ``search.param`` in [low, high], as before."""
    search = _search_of(study)
    method = method_variants(study.file.methods[0])[0]
    space = {search.param: Uniform(search.low, search.high, log=search.log)}
    return [MethodSearch(method["name"], method, space, study.name, "search",
                         [{search.param: v} for v in search.enqueue])]


def method_plans(study: Study) -> list[MethodSearch]:
    """``mismatch search FILE``: one search per method of the file (its first variant), each
    over its declared space or the ``search.params`` it has; errors name what does not fit."""
    search = _search_of(study)
    plans, wanted = [], search.params
    for entry in study.file.methods:
        method = method_variants(entry)[0]
        label = method["name"]
        if label in {p.label for p in plans}:
            continue  # a second entry of a method (a control) trains with the same tuned values
        declared = method_space(METHODS.get(label))
        space = declared if wanted is None else {p: declared[p] for p in wanted if p in declared}
        if not space:
            raise SpecError(f"{study.source}: method {label} declares none of search.params {wanted} "
                            f"(it may tune: {', '.join(declared)})")
        plans.append(MethodSearch(label, method, space, f"{study.name}.{label}", f"search-{label}",
                                  _paper_point(study, method, space)))
    unused = set(wanted or []) - {p for plan in plans for p in plan.space}
    if unused:
        raise SpecError(f"{study.source}: no method of the study declares search.params {sorted(unused)}")
    return plans


def _search_of(study: Study) -> SearchSpec:
    """The study's search; on a benchmark's fixed lists (``protocol.split: lists``, one split)
    its default folds [0, 1, 2] become [0]: each candidate is scored once, on the validation list."""
    search = study.file.search
    if search is None:
        raise SpecError(f"{study.source}: a search needs a 'search:' section")
    if "folds" not in search.model_fields_set and _fixed_lists(study):
        return search.model_copy(update={"folds": [0]})
    return search


def _fixed_lists(study: Study) -> bool:
    return study.trial(study.file.methods[0], study.first_point()).protocol.split == "lists"


def _paper_point(study: Study, method: dict[str, Any], space: dict[str, Dimension]) -> list[dict[str, Any]]:
    """The method's own values (its paper's defaults or the file's), tried first where in range."""
    spec = study.trial(method, study.first_point())
    point = {p: getattr(spec.train if p.startswith("train.") else spec.method, p.split(".")[-1]) for p in space}
    return [point] if all(space[p].contains(v) for p, v in point.items()) else []


def run_search(study: Study, storage: str | None = None, address: str | None = None, verbose: bool = False,
               stream: TextIO = sys.stdout, param: str | None = ALPHA, wait_resources_s: float | None = None,
               stale_lock_s: float = STALE_AFTER_S) -> dict[str, Any]:
    """Run (or resume) the study's search; returns and writes ``best.json``.

    ``param="alpha"`` (``mismatch search alpha``) searches the first method's alpha;
    ``param=None`` (``mismatch search FILE``) searches every method with the same budget.
    Like ``study run``, it holds the study's driver lock (:class:`~mismatch.study.lock.LockHeld`
    while another driver, a run or a search, holds it) and refuses resources no node has
    (:class:`~mismatch.study.resources.ResourceError`) before any candidate starts.
    """
    search = _search_of(study)
    storage = study.storage if storage is None else absolute_storage(storage)
    plans = alpha_plan(study) if param is not None else method_plans(study)
    seeds = tuple(search.seeds) if search.seeds else (None,)
    candidates = [Candidate(study, tuple(plan.space), tuple(search.folds), plan.method, seeds) for plan in plans]
    for plan, candidate in zip(plans, candidates):  # a spec error shows here, not once per candidate on a worker
        for fold, seed in candidate.runs:
            spec = candidate.spec({p: _some_value(d) for p, d in plan.space.items()}, fold, seed)
        plan.rungs = Rungs(search.scheduler, method_grace(search, plan.label, spec), search.reduction_factor,
                           spec.train.epochs, plan.optuna_name, search, storage, study.name)
    with StudyLock(storage, study.name, stale_after_s=stale_lock_s):
        _search_locked(study, storage, search, plans, candidates, address, verbose, stream, wait_resources_s)
        return write_best(study, storage, search, plans, legacy=param is not None)


def _search_locked(study: Study, storage: str, search: SearchSpec, plans: list[MethodSearch],
                   candidates: list[Candidate], address: str | None, verbose: bool, stream: TextIO,
                   wait_resources_s: float | None) -> None:
    from ray import tune

    from mismatch.study.ray_session import init_ray
    from mismatch.study.resources import WAIT_RESOURCES_S, check_resources, effective_resources, trial_slots
    from mismatch.study.worker import trial_fn

    init_ray(address, verbose)
    resources = effective_resources(study)
    check_resources(study, resources, address, WAIT_RESOURCES_S if wait_resources_s is None else wait_resources_s)
    threads = max(1, int(resources["cpu"]))
    for plan, candidate in zip(plans, candidates):
        if multi_fidelity(search):
            from mismatch.study.rung_search import candidate_fn

            fn = tune.with_parameters(candidate_fn, storage=storage, threads=threads, spec_of=candidate, rungs=plan.rungs)
        else:
            fn = tune.with_parameters(trial_fn, storage=storage, threads=threads, spec_of=candidate,
                                      objective=search_objective)
        _fit_one(study, storage, search, plan, tune.with_resources(fn, resources), verbose, stream,
                 trial_slots(study, resources))


def multi_fidelity(search: SearchSpec) -> bool:
    """Whether candidates train as one Tune trial each, rung by rung (a scheduler or a budget)."""
    return search.scheduler != "none" or search.budgeted


def _some_value(dim: Dimension) -> Any:
    return dim.choices[0] if isinstance(dim, Choice) else dim.low


def _fit_one(study: Study, storage: str, search: SearchSpec, plan: MethodSearch, trainable: Any, verbose: bool,
             stream: TextIO, slots: int = 1) -> None:
    from ray import tune

    from mismatch.study.runner import REUSE_ACTORS

    experiment = f"{storage}/{study.name}/_ray/{plan.experiment}"
    ranges = ", ".join(f"{p} {d.describe()}" for p, d in plan.space.items())
    print(f"[{study.name}] {plan.label}: searching {ranges}: {_budget_words(search)} x {len(search.folds)} folds"
          f"{f' x {len(search.seeds)} seeds' if search.seeds else ''}",
          file=stream, flush=True)
    if multi_fidelity(search):
        print(f"[{study.name}] {plan.label}: {plan.rungs.describe()}", file=stream, flush=True)
        # A candidate's rung reports carry no objective, on purpose: one that ends without it is PRUNED
        # (mismatch.study.rung_search). Tune would refuse them as results missing the searcher's metric.
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    if tune.Tuner.can_restore(experiment):
        print(f"[{study.name}] resuming the interrupted search", file=stream, flush=True)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=_searcher(search, plan, optuna_storage(search, storage, study.name),
                                                             study.file.max_concurrent or slots),
                                        num_samples=_num_samples(search),
                                        max_concurrent_trials=study.file.max_concurrent,
                                        reuse_actors=REUSE_ACTORS),
            run_config=tune.RunConfig(name=plan.experiment, storage_path=f"{storage}/{study.name}/_ray",
                                      failure_config=tune.FailureConfig(max_failures=study.file.max_failures),
                                      verbose=1 if verbose else 0),
        )
    tuner.fit()


def write_best(study: Study, storage: str, search: SearchSpec, plans: list[MethodSearch] | None = None,
               legacy: bool = True) -> dict[str, Any]:
    """Read each method's best candidate from its Optuna study and write ``best.json`` atomically.

    Per method: the best ``params`` (setting -> value), the ``objective`` (mean validation IoU
    over ``folds``), completed ``candidates``, and, from the search's trial rows, the
    ``validation_cases`` scored, the ``trials`` run and their ``train_time_s``. With
    ``legacy`` (``search alpha``) the top level also keeps ``param``/``value``/``mean_val_iou``.
    """
    plans = alpha_plan(study) if plans is None else plans
    rows = _search_rows(storage, study.name)
    methods = {plan.label: _method_best(study, storage, search, plan, rows) for plan in plans}
    cases = sorted({c for m in methods.values() for c in m["validation_cases"]})
    payload: dict[str, Any] = {
        "study": study.name, "objective": OBJECTIVE, "folds": search.folds, "seeds": search.seeds, "validation_cases": cases,
        "budget": {"candidates": search.candidates, "folds": len(search.folds), "seeds": len(search.seeds or [None]),
                   "trial_epochs": search.budget_epochs, "device_hours": search.budget_hours,
                   "scheduler": search.scheduler, "reduction_factor": search.reduction_factor}, "methods": methods,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if legacy:
        (only,) = methods.values()
        param = next(iter(only["params"]))
        payload.update(param=param, value=only["params"][param], mean_val_iou=only["objective"],
                       candidates=only["candidates"])
    fs, root = resolve(storage)
    _write_atomic(fs, f"{root}/{study.name}/best.json", json.dumps(payload, indent=2).encode())
    return payload


def _method_best(study: Study, storage: str, search: SearchSpec, plan: MethodSearch, rows: Any) -> dict[str, Any]:
    import optuna

    ot = optuna.load_study(study_name=plan.optuna_name, storage=optuna_storage(search, storage, study.name))
    states = optuna.trial.TrialState
    done = [t for t in ot.trials if t.state == states.COMPLETE]
    if not done:
        raise RuntimeError(f"search {study.name}: no candidate of {plan.label} completed")
    best = max(done, key=lambda t: t.value)  # COMPLETE only: a pruned candidate's rung score is never a best value
    mine = rows[rows["method"].astype(str) == plan.label] if len(rows) else rows
    ok = mine[mine["status"] == "completed"] if len(mine) else mine
    validation = sorted({c for s in ok.get("splits_json", []) if isinstance(s, str) for c in json.loads(s)["validation"]})
    entry = {"params": {p: best.params[tune_key(p)] for p in plan.space}, "objective": best.value,
             "candidates": len(done), "trials": int(len(mine)), "validation_cases": validation,
             "train_time_s": float(mine["train_time_s"].fillna(0).sum()) if len(mine) else 0.0}
    return {**entry, **_ledger(mine, ot.trials, plan)}


def _ledger(rows: Any, trials: list[Any], plan: MethodSearch) -> dict[str, Any]:
    """Every epoch the method's search trained (pruned runs included), its candidates by
    Optuna state, and the scheduler's settings: what best.json's ledger adds."""
    import optuna

    states = optuna.trial.TrialState
    epochs = int(rows["epochs"].fillna(0).sum()) if len(rows) and "epochs" in rows else 0
    pruned = rows[rows["status"] == "pruned"] if len(rows) else rows
    rungs = plan.rungs
    return {"trial_epochs": epochs, "pruned_candidates": sum(t.state == states.PRUNED for t in trials),
            "failed_candidates": sum(t.state == states.FAIL for t in trials), "pruned_trials": int(len(pruned)),
            "pruned_train_time_s": float(pruned["train_time_s"].fillna(0).sum()) if len(pruned) else 0.0,
            "scheduler": rungs.scheduler if rungs else "none", "grace_epochs": rungs.grace if rungs else None,
            "rungs": rungs.epochs_list if rungs else []}


def _search_rows(storage: str, study: str) -> Any:
    return read_table(storage, study, "trials", columns=["method", "status", "splits_json", "train_time_s", "epochs"])
