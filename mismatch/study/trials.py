"""A study: one study file expanded into the trial specs of its methods x grid.

A study file names a base trial spec, a list of methods (list-valued settings of a method
expand into variants), grid axes (labelled cases or slices, unlabelled pool, folds — ``all`` for every
fold of the dataset — and seeds), per-trial resources and named profiles that override parts
of the file. Everything is validated strictly when the file is loaded: a mistyped key is an
error naming the key and the file, before any trial runs. See docs/studies.md.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mismatch.config import (
    METHODS,
    KeyPath,
    MethodConfig,
    SpecError,
    TrialSpec,
    load_trial_spec,
    read_yaml_lines,
    set_dotted,
    validation_problems,
)
from mismatch.registry import did_you_mean
from mismatch.search_space import overrides_of
from mismatch.study.store import absolute_storage
from mismatch.study.study_file import GRID_AXES, FileLines, StudyFile, deep_merge


def method_variants(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Expand list-valued settings of one method entry into one dict per combination."""
    keys = [k for k, v in entry.items() if isinstance(v, list)]
    variants = []
    for combo in itertools.product(*(entry[k] for k in keys)):
        variants.append({**entry, **dict(zip(keys, combo))})
    return variants


def _is_best_of(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"best_of"}


def check_method_entry(index: int, entry: dict[str, Any], source: str | FileLines) -> None:
    """Validate one method entry before it is expanded: every list-valued key is a field of
    the method's config and every element of every list validates (one key varied at a time,
    the others at their first value), so a bad value costs one check, not a full expansion.
    ``{best_of: SEARCH}`` values are resolved (and checked) when trials are built. Errors name
    the file (and, given a :class:`FileLines`, the line) of the key."""
    file = source if isinstance(source, FileLines) else FileLines(source)
    where: KeyPath = ("methods", index)
    if not isinstance(entry["name"], str):
        raise file.error([((*where, "name"), "one method name per entry (give each method its own entry)")])
    try:
        config = METHODS.get(entry["name"])
    except ValueError as err:
        raise file.error([((*where, "name"), str(err))]) from None
    lists = {k: v for k, v in entry.items() if isinstance(v, list)}
    for key in lists:
        if key not in config.model_fields:
            raise file.error([((*where, key), "unknown key" + did_you_mean(key, config.model_fields))])
    probe = {}  # every key at its first value
    for key, value in entry.items():
        first = value[0] if isinstance(value, list) and value else value
        if first != [] and not _is_best_of(first):
            probe[key] = first
    for key, values in lists.items():
        for i, value in enumerate(values):
            if not _is_best_of(value):
                _check_element(config, {**probe, key: value}, (*where, key), i, file)


def _check_element(config: type[MethodConfig], probe: dict[str, Any], where: KeyPath, index: int,
                   file: FileLines) -> None:
    """Element ``index`` of the list at ``where`` validates in ``probe`` (errors of other keys
    are left to the full validation of each trial, which names them as before)."""
    key = where[-1]
    try:
        config.model_validate(probe)
    except ValidationError as err:
        problems = [((*where, index, *item["loc"][1:]), item["msg"]) for item in err.errors() if item["loc"][:1] == (key,)]
        if problems:
            raise file.error(problems) from None


def count_trials(entries: list[dict[str, Any]], axes: dict[str, list[Any]]) -> int:
    """How many trial specs ``entries`` crossed with the grid ``axes`` expand to (before
    duplicates are dropped), computed without expanding them."""
    per_point = sum(math.prod(len(v) for v in entry.values() if isinstance(v, list)) for entry in entries)
    return per_point * math.prod(len(v) for v in axes.values())


def _cap_message(study: StudyFile, axes: dict[str, list[Any]], count: int, source: str) -> str:
    sizes = [(len(v), f"methods[{i}].{k}") for i, e in enumerate(study.methods) for k, v in e.items()
             if isinstance(v, list)]
    sizes += [(len(v), f"grid.{a}") for a, v in axes.items()]
    largest = ", ".join(f"{key} ({n} values)" for n, key in sorted(sizes, key=lambda s: -s[0])[:3])
    return (f"invalid study in {source}: it expands to {count:,} trials, more than max_trials: "
            f"{study.max_trials:,} (largest lists: {largest}); shorten the lists, or raise max_trials "
            "in the study file if you mean it")


class Study:
    """A loaded study: its file, the profile applied, and the trial specs it expands to.

    Relative dataset paths mean "relative to ``workdir``" (by default the folder the study was
    loaded from), wherever a trial spec is built: Ray Tune runs each trial in its own folder.
    """

    def __init__(self, file: StudyFile, source: str, profile: str | None, storage: str | None = None,
                 workdir: str | None = None, lines: FileLines | None = None) -> None:
        self.file = file
        self.source = source
        self.profile = profile
        self.lines = lines or FileLines(source, profile=profile)
        self.storage = absolute_storage(storage or file.storage)
        self.workdir = workdir or os.getcwd()
        self._best: dict[str, dict[str, Any]] = {}

    @property
    def name(self) -> str:
        """The study's name (its folder under the storage)."""
        return self.file.name

    def trials(self, n_folds: int | None = None) -> list[TrialSpec]:
        """Every trial spec of the grid, validated, without duplicates, in a stable order."""
        folds = self.file.grid.fold
        if folds == "all":
            folds = list(range(n_folds if n_folds is not None else self.n_folds()))
        named = ("labelled_cases", "labelled_slices", "unlabelled_slices", "seed", "label_draw")
        axes = {"fold": folds, **{a: getattr(self.file.grid, a) for a in named}}
        axes = {a: v for a, v in axes.items() if v is not None}
        count = count_trials(self.file.methods, axes)
        if count > self.file.max_trials:
            raise SpecError(_cap_message(self.file, axes, count, self.source))
        specs: dict[str, TrialSpec] = {}
        for entry in self.file.methods:
            for method in method_variants(entry):
                for combo in itertools.product(*axes.values()):
                    spec = self.trial(method, dict(zip(axes, combo)))
                    specs.setdefault(spec.trial_id(), spec)
        return list(specs.values())

    def first_point(self) -> dict[str, Any]:
        """The first value of every grid axis but ``fold`` (where a search scores its candidates)."""
        axes = ("labelled_cases", "labelled_slices", "unlabelled_slices", "seed")
        return {a: getattr(self.file.grid, a)[0] for a in axes if getattr(self.file.grid, a)}

    def trial(
        self, method: dict[str, Any], point: dict[str, Any], overrides: dict[str, Any] | None = None
    ) -> TrialSpec:
        """The validated trial spec of one method variant at one grid point.

        ``method`` is one of :func:`method_variants` (``best_of`` values are resolved), ``point``
        maps grid axes (``fold``, ``labelled_cases``, ``labelled_slices``, ``unlabelled_slices``, ``seed``) to
        values, and ``overrides`` is merged over the trial's settings last (a search's
        candidate, e.g. ``{"method": {"alpha": 0.003}}``).
        """
        method = {k: self._resolve(v, k, method["name"]) for k, v in method.items()}
        tree = deep_merge(self.file.base, {"study": self.name})
        tree = deep_merge(tree, self.tuned_overrides(method["name"]))  # the entry's own values win
        tree = deep_merge(tree, {"method": method})
        tree = deep_merge(tree, overrides or {})
        self._absolute_data_paths(tree)
        for axis, value in point.items():
            set_dotted(tree, GRID_AXES[axis], value)
        try:
            spec = load_trial_spec(tree, source=self.source)
        except SpecError as err:
            if not err.problems:
                raise
            raise self.lines.error([(self.file_key(loc, method), msg) for loc, msg in err.problems]) from None
        if spec.protocol.unlabelled_slices is not None and not _uses_unlabelled(spec.method.name):
            # A supervised-only method trains the same whatever the unlabelled pool: one trial,
            # not one per pool size (the report repeats it in every row, as the paper's Table II).
            spec = spec.model_copy(update={"protocol": spec.protocol.model_copy(update={"unlabelled_slices": None})})
        return spec

    def file_key(self, loc: KeyPath, method: dict[str, Any]) -> KeyPath:
        """Where in the study file (profile applied) a trial spec's key ``loc`` comes from:
        ``method.*`` from the method's entry, grid axes from ``grid``, the rest from ``base``."""
        if loc[:1] == ("method",):
            same = [i for i, e in enumerate(self.file.methods) if e.get("name") == method.get("name")]
            having = [i for i in same if loc[1:2] and loc[1] in self.file.methods[i]]
            index = (having or same or [0])[0]
            return ("methods", index, *loc[1:])
        if loc == ("study",):
            return ("name",)
        dotted = ".".join(str(p) for p in loc)
        axis = next((a for a, target in GRID_AXES.items() if target == dotted), None)
        if axis is not None and getattr(self.file.grid, axis) is not None:
            return ("grid", axis)
        return ("base", *loc)

    def _absolute_data_paths(self, tree: dict[str, Any]) -> None:
        """Make ``data.root`` and ``data.prepared`` absolute against ``workdir`` (URLs stay)."""
        data = tree.get("data")
        for key in ("root", "prepared"):
            if isinstance(data, dict) and isinstance(data.get(key), str) and "://" not in data[key]:
                data[key] = os.path.abspath(os.path.join(self.workdir, os.path.expanduser(data[key])))

    def best(self, search: str) -> dict[str, Any]:
        """The ``best.json`` of search ``search`` (read once per study)."""
        if search not in self._best:
            from mismatch.study.best import read_best

            self._best[search] = read_best(self.storage, search)
        return self._best[search]

    def searches(self) -> list[str]:
        """The searches whose results this study trains with (``tuned`` and every ``best_of``)."""
        named = [self.file.tuned] if self.file.tuned else []
        for entry in self.file.methods:
            named += [str(v["best_of"]) for v in entry.values() if isinstance(v, dict) and set(v) == {"best_of"}]
        return list(dict.fromkeys(named))

    def tuned_overrides(self, method: str) -> dict[str, Any]:
        """Settings of ``method`` from the study's ``tuned:`` search (method fields and ``train.*``)."""
        if not self.file.tuned:
            return {}
        from mismatch.study.best import tuned_values

        return overrides_of(tuned_values(self.best(self.file.tuned), method, self.file.tuned))

    def _resolve(self, value: Any, key: str, method: str) -> Any:
        """``{best_of: SEARCH}`` becomes the best value of ``key`` that search wrote to its best.json."""
        if isinstance(value, dict) and set(value) == {"best_of"}:
            from mismatch.study.best import best_value

            search = str(value["best_of"])
            return best_value(self.best(search), method, key, search)
        return value

    def n_folds(self) -> int:
        """How many folds the base dataset and protocol give (for ``fold: all``)."""
        from mismatch.data import n_folds_of  # data reading stays out of file parsing

        tree = deep_merge(self.file.base, {"method": {"name": self.file.methods[0]["name"]}})
        self._absolute_data_paths(tree)
        probe = load_trial_spec(tree, source=self.source)
        return n_folds_of(probe.data, probe.protocol)


def _uses_unlabelled(method: str) -> bool:
    return METHODS.get(method).uses_unlabelled


def _apply_profile(raw: dict[str, Any], profile: str | None, source: str, lines: FileLines) -> dict[str, Any]:
    profiles = raw.get("profiles") or {}
    if profile is None:
        return raw
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise SpecError(f"{source}: unknown profile {profile!r} (profiles: {known})")
    override = profiles[profile]
    if not isinstance(override, dict):
        raise lines.error([(("profiles", profile), "a profile must be a mapping")])
    unknown = set(override) - (set(StudyFile.model_fields) - {"profiles"})
    if unknown:
        key = sorted(unknown)[0]
        raise lines.error([(("profiles", profile, key), "unknown key" + did_you_mean(key, StudyFile.model_fields))])
    return deep_merge(raw, override)


def load_study(path: str | Path, profile: str | None = None, storage: str | None = None) -> Study:
    """Load, validate and expand a study file; every trial spec is checked here.

    ``storage`` overrides the file's ``storage`` (where results and searches' best values are).
    """
    source = str(path)
    raw, key_lines = read_yaml_lines(path, "study")
    lines = FileLines(source, key_lines, profile)
    merged = _apply_profile(raw, profile, source, lines)
    try:
        file = StudyFile.model_validate(merged)
    except ValidationError as err:
        raise lines.error(validation_problems(err, merged, root=StudyFile)) from None
    _check_size(file, source)  # before any expansion or per-entry check: a huge file fails at once
    for index, entry in enumerate(file.methods):
        check_method_entry(index, entry, lines)
    study = Study(file, source, profile, storage, lines=lines)
    try:
        study.trials()  # validate every trial now, not hours into a cluster run
    except RecursionError:
        raise SpecError(f"invalid study in {source}: a value is nested too deeply to read") from None
    return study


def _check_size(file: StudyFile, source: str) -> None:
    """The trial cap on the file as written (``fold: all`` counted as one fold: a lower bound;
    :meth:`Study.trials` checks the exact count)."""
    axes = {a: v for a in GRID_AXES if isinstance(v := getattr(file.grid, a), list)}
    count = count_trials(file.methods, axes)
    if count > file.max_trials:
        raise SpecError(_cap_message(file, axes, count, source))


def trial_payload(spec: TrialSpec) -> dict[str, Any]:
    """A spec as plain JSON-able data (what travels to a Ray worker)."""
    return json.loads(spec.model_dump_json())
