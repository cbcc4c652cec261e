"""Where a search keeps its Optuna studies, and how its settings are keyed in Ray and Optuna."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mismatch.config import SpecError
from mismatch.study.study_file import SearchSpec


def tune_key(name: str) -> str:
    """A searched setting's key in Ray's config and Optuna (no dots: Ray nests dotted keys)."""
    return name.replace(".", "__")


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
