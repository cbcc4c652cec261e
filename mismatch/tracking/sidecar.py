"""The last epoch a file-based tracker logged for a trial (W&B offline and TensorBoard cannot
be asked), kept in a small JSON file next to its logs and replaced atomically."""

from __future__ import annotations

import json
import os


def read_last_epoch(folder: str, trial_id: str) -> int:
    """The last epoch logged for ``trial_id`` under ``folder`` (-1: none)."""
    try:
        with open(os.path.join(folder, f"{trial_id}.logged.json")) as handle:
            return int(json.load(handle)["last_epoch"])
    except (OSError, ValueError, KeyError):
        return -1


def write_last_epoch(folder: str, trial_id: str, epoch: int) -> None:
    """Record that ``trial_id``'s epochs up to ``epoch`` are logged."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{trial_id}.logged.json")
    with open(f"{path}.tmp", "w") as handle:
        json.dump({"last_epoch": epoch}, handle)
    os.replace(f"{path}.tmp", path)
