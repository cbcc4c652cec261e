"""The best values a finished search wrote (``best.json``), read without Ray or torch, so a
study that names it (``alpha: {best_of: NAME}`` or ``tuned: NAME``) loads quickly.

``best.json`` holds, per method, ``params`` (setting -> best value; ``train.lr`` for the
learning rate), ``objective``, ``candidates``, ``trials``, ``train_time_s`` and the
``validation_cases`` scored; a ``search alpha`` file also keeps ``param`` and ``value`` at the
top level. :func:`record_tuning` copies the best.json of every search a study names into
``<storage>/<study>/tuning.json``, where the report finds them (leakage check and ledger).
"""

from __future__ import annotations

import json
from typing import Any

from mismatch.config import SpecError
from mismatch.study.store import _write_atomic, absolute_storage, resolve


def read_best(storage: str, study: str) -> dict[str, Any]:
    """The ``best.json`` a finished search wrote (a clear error if there is none)."""
    fs, root = resolve(absolute_storage(storage))
    path = f"{root}/{study}/best.json"
    try:
        with fs.open_input_stream(path) as handle:
            return json.loads(handle.read())
    except (FileNotFoundError, OSError):
        raise SpecError(f"no search result at {path}: run `mismatch search` (or `mismatch search alpha`) "
                        f"for study {study!r} first") from None


def tuned_values(best: dict[str, Any], method: str, search: str) -> dict[str, Any]:
    """The best values a search found for ``method`` (setting -> value)."""
    methods = best.get("methods") or {}
    if method not in methods:
        tuned = ", ".join(methods) or "none (a `search alpha` result: name it with {best_of: ...})"
        raise SpecError(f"search {search!r} tuned no method {method!r}; it tuned: {tuned}")
    return dict(methods[method]["params"])


def best_value(best: dict[str, Any], method: str, key: str, search: str) -> Any:
    """The one value ``{best_of: search}`` stands for: ``key`` of ``method``, or a ``search alpha`` value."""
    params = ((best.get("methods") or {}).get(method) or {}).get("params") or {}
    if key in params:
        return params[key]
    if "value" in best and best.get("param", key) == key:
        return best["value"]
    raise SpecError(f"search {search!r} has no best value of {key!r} for method {method!r}")


def record_tuning(study: Any) -> dict[str, Any]:
    """Write ``<storage>/<study>/tuning.json``: the best.json of every search the study names
    (``{}`` and no file when it names none). The report reads it."""
    payload = {name: study.best(name) for name in study.searches()}
    if payload:
        fs, root = resolve(study.storage)
        fs.create_dir(f"{root}/{study.name}", recursive=True)
        _write_atomic(fs, f"{root}/{study.name}/tuning.json", json.dumps(payload, indent=2).encode())
    return payload
