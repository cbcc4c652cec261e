"""The best value a finished search wrote (``best.json``), read without Ray or torch, so a
study that names it (``alpha: {best_of: NAME}``) loads quickly."""

from __future__ import annotations

import json
from typing import Any

from mismatch.config import SpecError
from mismatch.study.store import absolute_storage, resolve


def read_best(storage: str, study: str) -> dict[str, Any]:
    """The ``best.json`` a finished search wrote (a clear error if there is none)."""
    fs, root = resolve(absolute_storage(storage))
    path = f"{root}/{study}/best.json"
    try:
        with fs.open_input_stream(path) as handle:
            return json.loads(handle.read())
    except (FileNotFoundError, OSError):
        raise SpecError(f"no search result at {path}: run `mismatch search alpha` for study {study!r} first") from None
