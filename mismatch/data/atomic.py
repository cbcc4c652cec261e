"""Writing a folder atomically: build it in a hidden temporary sibling, then rename it into place.

A crash leaves at most the hidden ``.NAME.tmp-*`` sibling, never a half-written ``NAME``.
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from pathlib import Path

from mismatch.data.errors import OutputExistsError


def temporary_sibling(path: Path) -> Path:
    """A new hidden folder beside ``path`` (mkdir, unlike mkdtemp, honours the umask); its name
    carries this process's id, so a later run can tell a killed run's folder from a live one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    return tmp


def remove_stale_siblings(path: Path) -> list[Path]:
    """Delete the ``.NAME.tmp-*`` folders that killed runs left beside ``path``; returns them.

    A folder whose name carries the id of a process still running on this machine is kept
    (another run may be writing it); one without an id (older runs) is stale.
    """
    removed = []
    for tmp in sorted(path.parent.glob(f".{glob.escape(path.name)}.tmp-*")):
        if tmp.is_dir() and not _owner_alive(tmp.name[len(path.name) + 6:]):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _owner_alive(suffix: str) -> bool:
    pid, sep, _ = suffix.partition("-")
    if not sep or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


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
