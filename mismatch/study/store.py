"""The Parquet results store: one file per trial and table, written atomically.

Layout (docs/results-schema.md)::

    <storage>/<study>/trials/<trial_id>.parquet
    <storage>/<study>/images/<trial_id>.parquet
    <storage>/<study>/epochs/<trial_id>.parquet
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
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TABLES = ("trials", "images", "epochs")


def resolve(storage: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it for a local path or a URI."""
    if "://" in storage:
        return pafs.FileSystem.from_uri(storage)
    return pafs.LocalFileSystem(), os.path.abspath(storage)


def _write_atomic(fs: pafs.FileSystem, path: str, payload: bytes) -> None:
    """Write bytes to ``path`` through a temporary sibling and a move."""
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(payload)
    fs.move(tmp, path)


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
    if predictions:
        buf = io.BytesIO()
        np.savez_compressed(buf, **predictions)
        _write_atomic(fs, f"{base}/predictions/{trial_id}.npz", buf.getvalue())
    _write_atomic(fs, f"{base}/trials/{trial_id}.parquet", _parquet_bytes(pd.DataFrame([trial])))
    return base


def read_table(storage: str, study: str, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read one table of a study (all trials) as a single DataFrame (empty if none written)."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    fs, root = resolve(storage)
    folder = f"{root}/{study}/{table}"
    info = fs.get_file_info(folder)
    if info.type == pafs.FileType.NotFound:
        return pd.DataFrame(columns=columns or [])
    selector = pafs.FileSelector(folder)
    files = [f.path for f in fs.get_file_info(selector) if f.path.endswith(".parquet")]
    if not files:
        return pd.DataFrame(columns=columns or [])
    # Files of different trials may have different loss columns; promote to one schema.
    tables = [pq.read_table(p, filesystem=fs, columns=columns) for p in sorted(files)]
    return pa.concat_tables(tables, promote_options="default").to_pandas()
