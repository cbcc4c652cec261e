"""One driver per study: ``<storage>/<study>/driver.lock``.

Two drivers on one study and storage would both train every trial and delete each other's
checkpoints. The lock is a small JSON file (host, pid, start time) created atomically with
``O_CREAT | O_EXCL`` on a local or shared filesystem; the driver refreshes its mtime every
``heartbeat_s`` (a heartbeat). A second driver refuses with :class:`LockHeld` naming the
holder, unless the lock is stale: same host and the pid is gone, or no heartbeat for
``stale_after_s``; a stale lock is taken over, saying so. On object storage (``s3://``, ...)
there is no atomic create: the lock is best effort (check, then write), see docs/studies.md.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

#: Seconds between heartbeats (mtime refreshes) of a held lock.
HEARTBEAT_S = 60.0
#: A lock with no heartbeat for this long is stale (five missed heartbeats).
STALE_AFTER_S = 300.0
LOCK_NAME = "driver.lock"


class LockHeld(RuntimeError):
    """Another live driver holds the study's lock."""


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock: host, pid and start time (ISO 8601, UTC)."""

    host: str
    pid: int
    started: str

    @classmethod
    def mine(cls) -> LockInfo:
        """This process."""
        return cls(socket.gethostname(), os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @classmethod
    def parse(cls, text: str) -> LockInfo:
        """A lock file's content; an unreadable one has host '?' and pid -1 (judged by age only)."""
        try:
            data = json.loads(text)
            return cls(str(data["host"]), int(data["pid"]), str(data["started"]))
        except (ValueError, KeyError, TypeError):
            return cls("?", -1, "?")

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}"


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def stale_reason(info: LockInfo, age_s: float, stale_after_s: float) -> str | None:
    """Why a lock is stale (its holder is gone or silent), or None if it is live."""
    if info.host == socket.gethostname() and info.pid > 0 and not pid_alive(info.pid):
        return f"pid {info.pid} is gone"
    if age_s > stale_after_s:
        return f"no heartbeat for {age_s:.0f} s"
    return None


class StudyLock:
    """The driver lock of ``study`` in ``storage`` (a folder or a URI); a context manager."""

    def __init__(self, storage: str, study: str, stale_after_s: float = STALE_AFTER_S,
                 heartbeat_s: float = HEARTBEAT_S, stream: TextIO | None = None) -> None:
        local = storage[len("file://"):] if storage.startswith("file://") else storage
        self.uri = "://" in local
        self.path = f"{storage.rstrip('/')}/{study}/{LOCK_NAME}" if self.uri else str(Path(local) / study / LOCK_NAME)
        self.study = study
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.stream = sys.stderr if stream is None else stream  # looked up now: tests capture it
        self.info = LockInfo.mine()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._held = False
        self._made_folder = False

    def acquire(self) -> None:
        """Take the lock, or take over a stale one (saying so); :class:`LockHeld` if live."""
        payload = json.dumps(asdict(self.info)).encode()
        if self.uri:
            self._acquire_uri(payload)
        else:
            self._acquire_local(payload)
        self._held = True
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="study-lock-heartbeat", daemon=True)
        self._beat.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        if not self._held:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        self._held = False
        try:
            if LockInfo.parse(self._read()) == self.info:
                self._remove()
        except FileNotFoundError:
            pass
        if self._made_folder:  # a study refused before it wrote anything leaves no empty folder behind
            try:
                os.rmdir(os.path.dirname(self.path))
            except OSError:  # not empty (rows, checkpoints, another driver's lock): kept
                pass

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # local or shared filesystem: O_EXCL create, atomic takeover by rename

    def _acquire_local(self, payload: bytes) -> None:
        folder = os.path.dirname(self.path)
        self._made_folder = not os.path.isdir(folder)
        os.makedirs(folder, exist_ok=True)
        for _ in range(3):  # a retry follows the removal of a stale lock, or of the empty folder
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_local()
                continue
            except FileNotFoundError:  # a refused driver's release removed the empty folder meanwhile
                os.makedirs(folder, exist_ok=True)
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            return
        raise LockHeld(self._held_message(LockInfo.parse(self._read())))

    def _take_over_local(self) -> None:
        """Move a stale lock aside (raises :class:`LockHeld` for a live one)."""
        try:
            before = os.stat(self.path)
            info = LockInfo.parse(self._read())
        except FileNotFoundError:
            return  # released meanwhile
        reason = stale_reason(info, time.time() - before.st_mtime, self.stale_after_s)
        if reason is None:
            raise LockHeld(self._held_message(info))
        aside = f"{self.path}.stale-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if os.stat(aside).st_ino != before.st_ino:  # another driver took over first: give its lock back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.remove(aside)
            raise LockHeld(self._held_message(LockInfo.parse(self._read())))
        os.remove(aside)
        print(f"[{self.study}] took over a stale driver lock ({info.describe()}: {reason})",
              file=self.stream, flush=True)

    # object storage: no atomic create, best effort

    def _acquire_uri(self, payload: bytes) -> None:
        from pyarrow import fs as pafs

        from mismatch.study.store import resolve

        fs, path = resolve(self.path)
        found = fs.get_file_info(path)
        if found.type != pafs.FileType.NotFound:
            info = LockInfo.parse(self._read())
            age = time.time() - found.mtime.timestamp() if found.mtime is not None else 0.0
            reason = stale_reason(info, age, self.stale_after_s)
            if reason is None:
                raise LockHeld(self._held_message(info))
            print(f"[{self.study}] took over a stale driver lock ({info.describe()}: {reason})",
                  file=self.stream, flush=True)
        print(f"[{self.study}] warning: object storage has no atomic create; the driver lock at "
              f"{self.path} is best effort (start one driver per study)", file=self.stream, flush=True)
        self._write_uri(payload)

    def _write_uri(self, payload: bytes) -> None:
        from mismatch.study.store import resolve

        fs, path = resolve(self.path)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(payload)

    # shared helpers

    def _read(self) -> str:
        if not self.uri:
            return Path(self.path).read_text()
        from mismatch.study.store import resolve

        fs, path = resolve(self.path)
        try:
            with fs.open_input_stream(path) as f:
                return f.read().decode(errors="replace")
        except OSError as err:
            raise FileNotFoundError(self.path) from err

    def _remove(self) -> None:
        if not self.uri:
            os.remove(self.path)
            return
        from mismatch.study.store import resolve

        fs, path = resolve(self.path)
        fs.delete_file(path)

    def _heartbeat(self) -> None:
        """Refresh the lock's mtime (rewrite it on object storage) until released."""
        payload = json.dumps(asdict(self.info)).encode()
        while not self._stop.wait(self.heartbeat_s):
            try:
                if self.uri:
                    self._write_uri(payload)
                else:
                    os.utime(self.path)
            except OSError:  # a transient storage error: the next beat tries again
                pass

    def _held_message(self, info: LockInfo) -> str:
        return (f"study {self.study} is already being run by another driver ({info.describe()}; "
                f"lock {self.path}): wait for it to finish or stop it (a lock whose driver is gone is "
                f"taken over: at once on the same host, after {self.stale_after_s:.0f} s without a heartbeat otherwise)")
