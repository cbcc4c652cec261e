"""Atomic writes, and the one error of a full disk: the module every writer of the package uses.

A file is written to a hidden temporary sibling and renamed into place (:func:`write_atomic`);
a folder is built in a hidden ``.NAME.tmp-<pid>-*`` sibling (:func:`temporary_sibling`) and
renamed into place by its writer. A crash leaves at most the hidden sibling, never a
half-written file or folder. A write that fails because the disk is full becomes a
:class:`DiskFullError` naming the path. Standard library only: it sits below every layer.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: errno values of a full disk (or a full quota, which reads the same to the user).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: How pyarrow and others word a full disk when they give no errno; numpy's ``tofile`` reports
#: only a short write ("98304 requested and 51168 written"), which on a local disk means full.
DISK_FULL_TEXTS = re.compile(r"no space left on device|disk quota exceeded|\d+ requested and \d+ written", re.I)


class DiskFullError(OSError):
    """A write failed because the disk holding ``path`` is full; its text is the one line the
    CLI prints: the path, that nothing finished was lost, and what to do."""

    def __init__(self, path: str | os.PathLike[str], detail: str | None = None, text: str | None = None) -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.path = str(path)
        self.detail = detail
        self.text = text  # the line of another process's DiskFullError, passed on as it is

    def __str__(self) -> str:
        if self.text:
            return self.text
        writing = f" (writing {self.detail})" if self.detail and self.detail != self.path else ""
        return (f"no space left on the disk of {self.path}{writing}: nothing finished was lost and the partial "
                "files were removed; free space there and run the same command again")


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk (or the quota) is full."""
    if isinstance(err, DiskFullError):
        return True
    if not isinstance(err, OSError):
        return False
    return err.errno in DISK_FULL_ERRNOS or DISK_FULL_TEXTS.search(str(err)) is not None


def as_disk_full(err: BaseException, path: str | os.PathLike[str]) -> BaseException:
    """``err`` as a :class:`DiskFullError` naming ``path`` if it says the disk is full, else ``err``
    itself (see :func:`disk_full_names` for a block)."""
    if isinstance(err, DiskFullError) or not is_disk_full(err):
        return err
    filename = getattr(err, "filename", None)
    return DiskFullError(path, str(filename) if filename else None)


@contextmanager
def disk_full_names(path: str | os.PathLike[str]) -> Iterator[None]:
    """Within the block, a full-disk ``OSError`` becomes a :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except OSError as err:
        converted = as_disk_full(err, path)
        if converted is err:
            raise
        raise converted from err


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


def write_atomic(path: str | os.PathLike[str], data: bytes | bytearray | memoryview | str) -> None:
    """Write ``data`` (text: as UTF-8) to ``path`` through a unique hidden sibling and a rename: a reader sees the
    old file or the new one, never a part. A failed write (a full disk:
    :class:`DiskFullError` naming ``path``; an interrupt) removes the sibling."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with disk_full_names(path):
            if isinstance(data, str):
                data = data.encode("utf-8")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
