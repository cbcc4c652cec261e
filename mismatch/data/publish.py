"""Publishing a dataset folder built in a hidden sibling (:func:`mismatch.atomic.temporary_sibling`)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from mismatch.data.errors import OutputExistsError

__all__ = ["publish", "refuse_non_empty"]


def refuse_non_empty(out: Path, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` when ``out`` is a file, or a non-empty folder and not ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} is not empty (pass overwrite=True / --overwrite to replace it)")


def publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first, then deleted."""
    refuse_non_empty(out, overwrite)
    if not out.is_dir():
        os.rename(tmp, out)
        return
    trash = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(out, trash)
    os.rename(tmp, out)
    shutil.rmtree(trash, ignore_errors=True)
