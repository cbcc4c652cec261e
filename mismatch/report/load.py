"""Read a study's Parquet rows (and where its optional extras live) for the report.

``RESULTS`` is either a study folder ``<storage>/<study>/`` with ``trials/``, ``images/``,
``predictions/`` (and optionally ``optuna/journal.log``), or one Parquet file (or a folder of
Parquet files) of merged per-image rows, in which case trial-level information is absent.
Only the columns the report uses are read; string columns come back as categoricals, which
keeps a million rows small and group-bys fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mismatch import results as schema
from mismatch.results.versions import ASSUMED_VERSION, VERSION_COLUMN

IDENTITY = list(schema.IDENTITY)
BIN_COLUMNS = schema.bin_columns()
# The trials columns the report shows (the schema has more; see mismatch.results.TRIAL_COLUMNS).
TRIAL_COLUMNS = IDENTITY + ["status", "error", *schema.TRIAL_PROTOCOL, *schema.TRIAL_BUDGET, "params",
                            "infer_time_per_image_s", "train_time_s",
                            "n_test_images", "device", "code_version", "torch_version",
                            "started_at", "finished_at", "spec_json"]
DECODER_COLUMNS = ["trial_id", "decoder", "decoder_name", "mean_fg_prob", *BIN_COLUMNS]
_STRINGS = set(schema.STRING_IDENTITY) | {"case_id"}  # categoricals: a million rows stay small
CASES_READ = ["trial_id", "case_id", "dice", "iou", "hd95_mm", "assd_mm", "nsd", "nsd_tolerance_mm"]
"""The columns of ``cases/`` the report reads (when a study has that table): a subset of
:data:`mismatch.results.schema.CASE_COLUMNS` after the identity's ``trial_id``."""
CLASSES_READ = ["trial_id", "level", "case_id", "slice_index", "patch", "class_index", "class_name", "dice", "iou"]
"""The columns of ``classes/`` the report reads (multi-class studies only): a subset of
:data:`mismatch.results.schema.CLASS_COLUMNS` after the identity's ``trial_id``."""


@dataclass
class StudyData:
    """Rows of one study, as read from disk.

    ``images`` has one row per test image; ``trials`` one row per trial, or None when the
    input was a merged Parquet file. ``fs``/``base`` locate the optional extras.
    """

    source: str
    images: pd.DataFrame
    trials: pd.DataFrame | None
    fs: pafs.FileSystem
    base: str | None
    files: dict[str, int] = field(default_factory=dict)
    uncommitted: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)
    """``{path: error}`` of every unreadable file left out (the report warns about each)."""

    def prediction_path(self, trial_id: str) -> str | None:
        """Path of ``predictions/<trial_id>.npz`` if it exists."""
        if self.base is None:
            return None
        path = f"{self.base}/predictions/{trial_id}.npz"
        return path if self.fs.get_file_info(path).type == pafs.FileType.File else None

    def decoder_rows(self) -> pd.DataFrame | None:
        """Per-decoder calibration rows (``decoders/``) of trials with a trials row, or None."""
        if self.base is None or self.trials is None:
            return None
        files = [f for f in _parquet_files(self.fs, f"{self.base}/decoders")
                 if _stem(f) in set(self.trials["trial_id"].astype(str))]
        if not files:
            return None
        rows = _read(self.fs, files, DECODER_COLUMNS, "decoders", self.corrupt)
        rows["trial_id"] = rows["trial_id"].astype(str)
        return rows

    def case_rows(self) -> pd.DataFrame | None:
        """Per-test-case rows (``cases/``, one file per trial) of committed trials, or None.

        Read as stored (the table is newer than schema version 1, so nothing to upgrade):
        ``trial_id``, ``case_id`` and whichever of :data:`CASES_READ` the files have.
        """
        if self.base is None or self.trials is None:
            return None
        committed = set(self.trials["trial_id"].astype(str))
        files = [f for f in _parquet_files(self.fs, f"{self.base}/cases") if _stem(f) in committed]
        frames = []
        for path in files:
            table = _open(self.fs, path, self.corrupt, _case_columns, dictionary=False)
            if table is not None:
                frames.append(table.to_pandas())
        return pd.concat(frames, ignore_index=True) if frames else None

    def has_class_rows(self) -> bool:
        """Whether the study has a ``classes/`` table (a multi-class task), without reading it."""
        return self.base is not None and bool(_parquet_files(self.fs, f"{self.base}/classes"))

    def class_rows(self) -> pd.DataFrame | None:
        """Per-class rows (``classes/``, tasks with C > 2 classes) of committed trials, or None
        (binary studies, and stores from before the table existed, have none)."""
        if self.base is None or self.trials is None:
            return None
        committed = set(self.trials["trial_id"].astype(str))
        files = [f for f in _parquet_files(self.fs, f"{self.base}/classes") if _stem(f) in committed]
        frames = []
        for path in files:
            table = _open(self.fs, path, self.corrupt,
                          lambda names: [c for c in CLASSES_READ if c in names] if set(CLASSES_READ) <= names else None,
                          dictionary=False)
            if table is not None:
                frames.append(table.to_pandas())
        return pd.concat(frames, ignore_index=True) if frames else None

    def optuna_journal(self) -> str | None:
        """Path of ``optuna/journal.log`` if the study has an Optuna search (local files only)."""
        if self.base is None or not isinstance(self.fs, pafs.LocalFileSystem):
            return None
        path = f"{self.base}/optuna/journal.log"
        return path if self.fs.get_file_info(path).type == pafs.FileType.File else None


def _resolve(results: str) -> tuple[pafs.FileSystem, str]:
    if "://" in results:
        return pafs.FileSystem.from_uri(results)
    return pafs.LocalFileSystem(), os.path.abspath(os.fspath(results))


def _parquet_files(fs: pafs.FileSystem, folder: str) -> list[str]:
    info = fs.get_file_info(folder)
    if info.type != pafs.FileType.Directory:
        return []
    found = fs.get_file_info(pafs.FileSelector(folder))
    return sorted(f.path for f in found if f.path.endswith(".parquet") and not f.base_name.startswith("."))


def _case_columns(names: set[str]) -> list[str] | None:
    return [c for c in CASES_READ if c in names] if {"trial_id", "case_id"} <= names else None


def _open(fs: pafs.FileSystem, path: str, skipped: dict[str, str] | None,
          columns: Callable[[set[str]], list[str] | None], dictionary: bool = True) -> pa.Table | None:
    """The ``columns(names in the file)`` of one Parquet file (None: the file is not read).

    An unreadable file raises an error naming it or, given ``skipped``, is added to it
    (``{path: error}``), warned about on stderr and left out (None).
    """
    try:
        handle = pq.ParquetFile(path, filesystem=fs,
                                read_dictionary=sorted(schema.STRING_IDENTITY) if dictionary else None)
        wanted = columns(set(handle.schema_arrow.names))
        return None if wanted is None else handle.read(columns=wanted)
    except (pa.ArrowException, OSError) as err:  # ArrowInvalid: "Parquet magic bytes not found ..."
        if skipped is None:
            raise ValueError(f"{path}: not a readable Parquet file ({err})") from err
        skipped[path] = str(err)
        print(f"warning: left out a corrupt results file {path}: {err}", file=sys.stderr)
        return None


def _read(fs: pafs.FileSystem, files: list[str], wanted: list[str], table: str,
          skipped: dict[str, str] | None = None) -> pd.DataFrame:
    """Concatenate ``files`` of ``table`` reading only ``wanted`` columns, upgraded to the current
    schema version (:func:`mismatch.results.upgrade`); strings become categoricals. A corrupt
    file raises an error naming it, or with ``skipped`` is left out (see :func:`_open`)."""
    wanted = list(dict.fromkeys(wanted))  # identity and per-table lists share names (trial_id)
    columns = schema.read_columns(wanted)
    tables = []
    for path in files:
        read = _open(fs, path, skipped, lambda names: [c for c in columns if c in names])
        if read is not None:
            tables.append(read)
    if not tables:
        return pd.DataFrame(columns=wanted)
    merged = pa.concat_tables(tables, promote_options="permissive")
    for name in _STRINGS & set(merged.column_names):
        column = merged.column(name)
        if not pa.types.is_dictionary(column.type):
            merged = merged.set_column(merged.column_names.index(name), name, pc.dictionary_encode(column))
    if _current(merged):  # the common case: nothing to upgrade, drop what was read for the check
        extra = [c for c in merged.column_names if c not in wanted]
        return merged.drop_columns(extra).to_pandas()
    frame = schema.upgrade(merged.to_pandas(), table)
    return frame[[c for c in wanted if c in frame]]


def _current(table: pa.Table) -> bool:
    """Whether every row is at the current schema version (rows without one count as version 1)."""
    if VERSION_COLUMN not in table.column_names:
        return ASSUMED_VERSION == schema.SCHEMA_VERSION
    versions = pc.fill_null(table.column(VERSION_COLUMN), ASSUMED_VERSION)
    bounds = pc.min_max(versions)
    return bounds["min"].as_py() == bounds["max"].as_py() == schema.SCHEMA_VERSION


def image_columns(metric: str, exclude_empty: bool) -> list[str]:
    """Per-image columns the report needs besides identity: the metric, ECE, the bins, case and counts."""
    # case_id and the pixel counts give per-case values (mismatch.report.cases) when no cases/ table exists
    return ["trial_id", metric, "ece", *BIN_COLUMNS, "case_id", "tp", "fp", "fn", "tn"] + (
        ["fg_pixels"] if exclude_empty else [])


def _complete(images: pd.DataFrame) -> pd.DataFrame:
    """Fill identity columns a merged file may lack, so the rest of the report can rely on them."""
    defaults = {"alpha": np.nan, "labelled_slices": -1, "unlabelled_slices": -1, "fold": 0, "seed": 0, "label_draw": 0,
                "study": "unknown", "model": "unknown", "dataset_fingerprint": "unknown",
                "schema_version": ASSUMED_VERSION}
    for name, value in defaults.items():
        if name not in images:
            images[name] = value
    if "method" not in images:
        raise ValueError("the per-image rows have no 'method' column; is this a results file?")
    if "trial_id" not in images:
        key = images[list(schema.VARIANT)]
        images["trial_id"] = pd.Categorical(key.astype(str).agg("|".join, axis=1))
    return images


class NotAStudyError(FileNotFoundError):
    """A folder that is not a study: no images/ and no Parquet files. ``studies`` lists the
    study folders directly inside it (a storage such as ``runs/`` holds one per study)."""

    def __init__(self, results: str, studies: list[str]) -> None:
        self.results = results
        self.studies = studies
        if studies:
            paths = [f"{results.rstrip('/')}/{name}" for name in studies]
            listing = "\n".join(f"  {p}" for p in paths)
            message = (f"{results} is a folder of studies, not a study; the study folders in it:\n{listing}\n"
                       f"name one, e.g. mismatch report {paths[0]}")
        else:
            message = f"{results} has no images/ folder and no Parquet files (and no study folders inside)"
        super().__init__(message)

    def __str__(self) -> str:  # OSError would format it as "[Errno ...]" otherwise
        return str(self.args[0])


def _study_folders(fs: pafs.FileSystem, folder: str) -> list[str]:
    """Names of the sub-folders of ``folder`` that hold a study's images/ or trials/ rows."""
    found = fs.get_file_info(pafs.FileSelector(folder))
    subfolders = sorted(f.path for f in found if f.type == pafs.FileType.Directory and not f.base_name.startswith("."))
    return [sub.rsplit("/", 1)[-1] for sub in subfolders
            if _parquet_files(fs, f"{sub}/images") or _parquet_files(fs, f"{sub}/trials")]


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1][: -len(".parquet")]


def _load_folder(results: str, fs: pafs.FileSystem, path: str, columns: list[str]) -> StudyData:
    """A study folder: trials/ rows are authoritative; image files without one are uncommitted."""
    image_files = _parquet_files(fs, f"{path}/images")
    trial_files = _parquet_files(fs, f"{path}/trials")
    if not trial_files:  # no trial-level rows: identity must come from the image rows
        corrupt: dict[str, str] = {}
        images = _complete(_read(fs, image_files, IDENTITY + columns, "images", corrupt))
        return StudyData(results, images, None, fs, path, {"images": len(image_files)}, corrupt=corrupt)
    corrupt: dict[str, str] = {}
    trials = _complete(_read(fs, trial_files, TRIAL_COLUMNS, "trials", corrupt))
    committed = set(trials["trial_id"].astype(str))
    keep = [f for f in image_files if _stem(f) in committed]
    orphans = sorted(_stem(f) for f in image_files if _stem(f) not in committed)
    images = _read(fs, keep, columns, "images", corrupt)
    files = {"images": len(keep), "trials": len(trial_files)}
    return StudyData(results, images, trials, fs, path, files, orphans, corrupt)


def load_study(results: str | Path, metric: str = "iou", exclude_empty: bool = False) -> StudyData:
    """Read a study folder or merged Parquet file(s), only the columns the report needs.

    In a study folder, identity comes from trials/ (the store writes a trial's row last, as its
    commit marker); image files of trials without a row are not read and are listed in
    ``uncommitted``. A corrupt file of a folder is left out with a warning on stderr and is
    listed in ``corrupt``; a single corrupt file raises an error naming it.
    """
    results = os.fspath(results)
    fs, path = _resolve(results)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such study folder or Parquet file: {results}")
    columns = image_columns(metric, exclude_empty)
    if info.type == pafs.FileType.File:
        return StudyData(results, _complete(_read(fs, [path], IDENTITY + columns, "images")), None, fs, None,
                         {"images": 1})
    if _parquet_files(fs, f"{path}/images"):
        return _load_folder(results, fs, path, columns)
    merged = _parquet_files(fs, path)  # a bare folder of merged Parquet files
    if not merged:
        raise NotAStudyError(results, _study_folders(fs, path))
    corrupt: dict[str, str] = {}
    images = _complete(_read(fs, merged, IDENTITY + columns, "images", corrupt))
    return StudyData(results, images, None, fs, None, {"images": len(merged)}, corrupt=corrupt)
