"""The Parquet results store: one file per trial and table, written atomically.

Layout (docs/results-schema.md)::

    <storage>/<study>/trials/<trial_id>.parquet
    <storage>/<study>/images/<trial_id>.parquet
    <storage>/<study>/epochs/<trial_id>.parquet
    <storage>/<study>/decoders/<trial_id>.parquet
    <storage>/<study>/cases/<trial_id>.parquet
    <storage>/<study>/classes/<trial_id>.parquet     (tasks with C > 2 classes)
    <storage>/<study>/predictions/<trial_id>.npz

``storage`` is a local path or a URI that pyarrow understands (``s3://``, ``gs://``,
``file://``); files are written to a temporary name and then moved, so a reader never sees a
half-written file and a crash loses at most the trial being written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mismatch.atomic import as_disk_full
from mismatch.results import TABLES
from mismatch.results.rows import fill_trial_defaults

QUARANTINE = "quarantine"
"""The folder of a study where ``study run`` moves corrupt files: ``quarantine/<table>/<name>``."""


class CorruptFileError(ValueError):
    """A results file that cannot be read as Parquet (truncated, overwritten); names the file."""

    def __init__(self, path: str, cause: BaseException | str) -> None:
        self.path = path
        self.cause = str(cause)
        super().__init__(f"{path}: not a readable Parquet file ({self.cause}); "
                         "`mismatch study run` moves it to the study's quarantine/ folder and runs its trial again")


@dataclass(frozen=True)
class CorruptFile:
    """One unreadable file of a study's store: its table, path and the reader's error."""

    table: str
    path: str
    error: str

    @property
    def trial_id(self) -> str:
        """The trial the file belongs to (every table has one file per trial, named by its id)."""
        return self.path.rsplit("/", 1)[-1].removesuffix(".parquet")


def absolute_storage(storage: str) -> str:
    """A URI unchanged, a local path made absolute (Ray and its workers need it so)."""
    return storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))


def resolve(storage: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it for a local path or a URI.

    pyarrow's own filesystems serve ``s3://``, ``gs://``, ``hdfs://`` and ``file://``; any
    other scheme that fsspec knows (``az://``, ``memory://``, ...) goes through fsspec.
    """
    if "://" not in storage:
        return pafs.LocalFileSystem(), os.path.abspath(storage)
    try:
        return pafs.FileSystem.from_uri(storage)
    except pa.ArrowInvalid:
        import fsspec  # a dependency of ray[tune]; only needed for schemes pyarrow lacks

        fs, path = fsspec.core.url_to_fs(storage)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path.rstrip("/")


def _write_atomic(fs: pafs.FileSystem, path: str, payload: bytes) -> None:
    """Write bytes to ``path`` through a temporary sibling and a move; a full disk raises
    :class:`~mismatch.atomic.DiskFullError` naming ``path``.

    :func:`mismatch.atomic.write_atomic` in pyarrow's filesystem terms: the store may be an
    object store (``s3://``, ``gs://``), which has no ``os.replace``; locally it is the same
    temporary-sibling-and-rename."""
    parent = path.rsplit("/", 1)[0]
    tmp = f"{parent}/.{uuid.uuid4().hex}.tmp"
    try:
        fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(tmp) as out:
            out.write(payload)
        fs.move(tmp, path)
    except BaseException as err:
        _delete_quietly(fs, tmp)  # a failed write (full disk, interrupt) leaves no .tmp file behind
        converted = as_disk_full(err, path)
        if converted is not err:
            raise converted from err
        raise


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_file(path)
    except OSError:
        pass  # the original error matters more than a leftover temporary file


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


def write_trial(
    storage: str,
    study: str,
    trial_id: str,
    trial: dict[str, Any],
    images: pd.DataFrame | None = None,
    epochs: pd.DataFrame | None = None,
    predictions: dict[str, np.ndarray] | None = None,
    splits: dict[str, Any] | None = None,
    decoders: pd.DataFrame | None = None,
    cases: pd.DataFrame | None = None,
    classes: pd.DataFrame | None = None,
) -> str:
    """Write one trial's tables under ``<storage>/<study>/``; the trials row is written last.

    Writing the per-trial row last makes it the commit marker: a trial whose row exists has
    all its other files. ``splits`` (every fold of the dataset) goes to a content-addressed
    ``splits/<sha>.json`` that trials sharing a dataset and protocol write identically; the
    row's ``splits_file`` names it. Returns the study folder.
    """
    fs, root = resolve(storage)
    base = f"{root}/{study}"
    if splits:
        payload = json.dumps(splits, sort_keys=True, indent=1).encode()
        name = f"splits/{hashlib.sha256(payload).hexdigest()[:16]}.json"
        _write_atomic(fs, f"{base}/{name}", payload)
        trial = {**trial, "splits_file": name}
    if epochs is not None and len(epochs):
        _write_atomic(fs, f"{base}/epochs/{trial_id}.parquet", _parquet_bytes(epochs))
    if images is not None and len(images):
        _write_atomic(fs, f"{base}/images/{trial_id}.parquet", _parquet_bytes(images))
    if decoders is not None and len(decoders):
        _write_atomic(fs, f"{base}/decoders/{trial_id}.parquet", _parquet_bytes(decoders))
    if cases is not None and len(cases):
        _write_atomic(fs, f"{base}/cases/{trial_id}.parquet", _parquet_bytes(cases))
    if classes is not None and len(classes):
        _write_atomic(fs, f"{base}/classes/{trial_id}.parquet", _parquet_bytes(classes))
    if predictions:
        buf = io.BytesIO()
        np.savez_compressed(buf, **predictions)
        _write_atomic(fs, f"{base}/predictions/{trial_id}.npz", buf.getvalue())
    _write_atomic(fs, f"{base}/trials/{trial_id}.parquet", _parquet_bytes(pd.DataFrame([trial])))
    return base


def write_result(storage: str, result: Any, extra: dict[str, Any] | None = None) -> str:
    """Write every table of a finished trial (a :class:`mismatch.trial.state.TrialResult`)."""
    trial = {**result.trial, **(extra or {})}
    return write_trial(storage, trial["study"], trial["trial_id"], trial, result.images, result.epochs,
                       result.predictions, result.splits, result.decoders, result.cases,
                       getattr(result, "classes", None))


def read_table(storage: str, study: str, table: str, columns: list[str] | None = None,
               skip_corrupt: bool = False) -> pd.DataFrame:
    """Read one table of a study (all trials) as a single DataFrame (empty if none written).

    An unreadable file raises :class:`CorruptFileError` naming it, or is left out when
    ``skip_corrupt`` (:func:`corrupt_files` lists them).
    """
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    fs, root = resolve(storage)
    files = _table_files(fs, f"{root}/{study}/{table}")
    tables = []
    for path in files:
        try:
            tables.append(_read_file(fs, path, columns))
        except CorruptFileError:
            if not skip_corrupt:
                raise
    if not tables:
        return pd.DataFrame(columns=columns or [])
    # Files of different trials may differ in columns (loss terms, failed vs completed rows):
    # promote to one schema, missing columns becoming nulls.
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    if table == "trials":
        frame = fill_trial_defaults(frame, columns)
    for column in columns or []:
        if column not in frame:
            frame[column] = None
    return frame


def _table_files(fs: pafs.FileSystem, folder: str) -> list[str]:
    """The sorted Parquet files directly in ``folder`` (none if it does not exist)."""
    if fs.get_file_info(folder).type == pafs.FileType.NotFound:
        return []
    return sorted(f.path for f in fs.get_file_info(pafs.FileSelector(folder)) if f.path.endswith(".parquet"))


def _read_file(fs: pafs.FileSystem, path: str, columns: list[str] | None) -> pa.Table:
    """One Parquet file, restricted to the requested columns it has; names the file if unreadable."""
    try:
        if columns is None:
            return pq.read_table(path, filesystem=fs)
        present = set(pq.read_schema(path, filesystem=fs).names)
        return pq.read_table(path, filesystem=fs, columns=[c for c in columns if c in present])
    except (pa.ArrowException, OSError) as err:  # ArrowInvalid: "Parquet magic bytes not found ..."
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise  # deleted while reading: not corruption
        raise CorruptFileError(path, _reason(err, path)) from err


def _reason(err: BaseException, path: str) -> str:
    """pyarrow's message without the path it repeats (the caller names the file once)."""
    return str(err).replace(f"Could not open Parquet input source '{path}': ", "")


def corrupt_files(storage: str, study: str) -> list[CorruptFile]:
    """Every Parquet file of the study's tables that cannot be read.

    Trials rows (small, and read whole by every status and resume) are read whole; the other
    tables' files only up to their footer and schema, which a truncated or overwritten file fails.
    """
    fs, root = resolve(storage)
    found = []
    for table in TABLES:
        for path in _table_files(fs, f"{root}/{study}/{table}"):
            try:
                if table == "trials":
                    pq.read_table(path, filesystem=fs)
                else:
                    pq.read_metadata(path, filesystem=fs).schema.to_arrow_schema()
            except (pa.ArrowException, OSError) as err:
                found.append(CorruptFile(table, path, _reason(err, path)))
    return found


def quarantine(storage: str, study: str, corrupt: list[CorruptFile]) -> list[tuple[str, str]]:
    """Move corrupt files to ``<study>/quarantine/<table>/<name>``; returns ``(from, to)`` per move.

    A corrupt file of any other table also moves its trial's row aside: the row is the commit
    marker, so the trial counts as not done and runs again, writing every file afresh.
    """
    fs, root = resolve(storage)
    base = f"{root}/{study}"
    moves: dict[str, str] = {}
    for item in corrupt:
        paths = [item.path]
        if item.table != "trials":
            paths.append(f"{base}/trials/{item.trial_id}.parquet")
        for path in paths:
            if path in moves or fs.get_file_info(path).type != pafs.FileType.File:
                continue
            table, name = path.rsplit("/", 2)[-2:]
            moves[path] = _move_aside(fs, path, f"{base}/{QUARANTINE}/{table}/{name}")
    return list(moves.items())


def _move_aside(fs: pafs.FileSystem, path: str, target: str) -> str:
    """Move ``path`` to ``target``, or ``target.1``, ``target.2``... if taken; returns where it went."""
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    candidate, n = target, 0
    while fs.get_file_info(candidate).type != pafs.FileType.NotFound:
        n += 1
        candidate = f"{target}.{n}"
    fs.move(path, candidate)
    return candidate


def trial_statuses(storage: str, study: str) -> dict[str, str]:
    """``{trial_id: status}`` of every trial row written for ``study``."""
    rows = read_table(storage, study, "trials", columns=["trial_id", "status"])
    return dict(zip(rows["trial_id"], rows["status"])) if len(rows) else {}


def completed_trials(storage: str, study: str, trial_ids: list[str]) -> set[str]:
    """Which of ``trial_ids`` have a completed row, reading only their own trials files (a
    fused group's members at its start; :func:`trial_statuses` reads the whole study)."""
    fs, root = resolve(storage)
    done = set()
    for trial_id in trial_ids:
        path = f"{root}/{study}/trials/{trial_id}.parquet"
        if fs.get_file_info(path).type != pafs.FileType.File:
            continue
        try:
            status = _read_file(fs, path, ["status"]).column("status").to_pylist()
        except CorruptFileError:  # quarantined by the next run's driver; trained and stored again
            continue
        if status == ["completed"]:
            done.add(trial_id)
    return done


def export_images(storage: str, study: str, out: str) -> int:
    """Merge every per-image file of ``study`` into one Parquet file (atomically); returns rows.

    A corrupt file stops the export with :class:`CorruptFileError` naming it (nothing is written).
    """
    frame = read_table(storage, study, "images")
    fs, path = resolve(out)
    _write_atomic(fs, path, _parquet_bytes(frame))
    return len(frame)


class TrialCheckpoint:
    """Where a trial keeps the checkpoint that a retry or a re-run continues from.

    On a local path the training loop writes straight into
    ``<storage>/<study>/checkpoints/<trial_id>/``; on an object store the checkpoint is kept
    in a local folder and copied up after every epoch (and down before a retry).
    """

    FILE = "trial.pt"

    def __init__(self, storage: str, study: str, trial_id: str, scratch: str | None = None,
                 file: str | None = None) -> None:
        self.fs, root = resolve(storage)
        self.file = file or self.FILE  # a fused group's checkpoint is fused.pt (mismatch.fusion)
        self.remote = f"{root}/{study}/checkpoints/{trial_id}"
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        self.local = self.remote if self.is_local else os.path.join(scratch or "/tmp", f"mismatch-ckpt-{trial_id}")

    def fetch(self) -> str:
        """The local folder to train in, holding the latest checkpoint if one exists."""
        os.makedirs(self.local, exist_ok=True)
        src = f"{self.remote}/{self.file}"
        if not self.is_local and self.fs.get_file_info(src).type == pafs.FileType.File:
            pafs.copy_files(src, os.path.join(self.local, self.file), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
        return self.local

    def push(self) -> None:
        """Copy the local checkpoint up (no-op on a local path)."""
        path = os.path.join(self.local, self.file)
        if not self.is_local and os.path.exists(path):
            with open(path, "rb") as handle:
                _write_atomic(self.fs, f"{self.remote}/{self.file}", handle.read())

    def exists(self) -> bool:
        """Whether a checkpoint has been written for this trial."""
        return self.fs.get_file_info(f"{self.remote}/{self.file}").type == pafs.FileType.File

    def delete(self) -> None:
        """Remove the checkpoint once the trial's rows are written."""
        if self.fs.get_file_info(self.remote).type != pafs.FileType.NotFound:
            self.fs.delete_dir(self.remote)
        if not self.is_local and os.path.isdir(self.local):
            shutil.rmtree(self.local, ignore_errors=True)


#: A fused group's checkpoint folder holds this list of its members' trial ids (for ``study status``).
GROUP_MEMBERS = "members.json"


def write_group_members(storage: str, study: str, group_id: str, trial_ids: list[str]) -> None:
    """Record which trials train in the fused group ``group_id`` (next to its checkpoint)."""
    fs, root = resolve(storage)
    _write_atomic(fs, f"{root}/{study}/checkpoints/{group_id}/{GROUP_MEMBERS}", json.dumps(trial_ids).encode())


def fused_groups(storage: str, study: str) -> dict[str, list[str]]:
    """``{group id: member trial ids}`` of every fused group that has a checkpoint folder
    (started, not finished)."""
    fs, root = resolve(storage)
    folder = f"{root}/{study}/checkpoints"
    if fs.get_file_info(folder).type == pafs.FileType.NotFound:
        return {}
    groups: dict[str, list[str]] = {}
    for info in fs.get_file_info(pafs.FileSelector(folder)):
        path = f"{info.path}/{GROUP_MEMBERS}"
        if info.type != pafs.FileType.Directory or fs.get_file_info(path).type != pafs.FileType.File:
            continue
        with fs.open_input_stream(path) as handle:
            try:
                groups[info.base_name] = [str(t) for t in json.loads(handle.read())]
            except ValueError:
                continue  # a torn file: the group writes it again when it restarts
    return groups


def fused_members(storage: str, study: str) -> set[str]:
    """Trial ids of every fused group that has a checkpoint folder (started, not finished)."""
    return {t for members in fused_groups(storage, study).values() for t in members}
