"""The epochs a file-based tracker logged for a trial (W&B offline and TensorBoard cannot be
asked), kept in a small JSON file next to its logs and replaced atomically."""

from __future__ import annotations

import json
import os

from mismatch.atomic import write_atomic


def _path(folder: str, trial_id: str) -> str:
    return os.path.join(folder, f"{trial_id}.logged.json")


def read_logged(folder: str, trial_id: str) -> set[int]:
    """The epochs logged for ``trial_id`` under ``folder``."""
    try:
        with open(_path(folder, trial_id)) as handle:
            return {int(e) for e in json.load(handle)["epochs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def write_logged(folder: str, trial_id: str, epochs: set[int]) -> None:
    """Record that ``epochs`` of ``trial_id`` are logged."""
    os.makedirs(folder, exist_ok=True)
    path = _path(folder, trial_id)
    write_atomic(path, json.dumps({"epochs": sorted(epochs)}))
