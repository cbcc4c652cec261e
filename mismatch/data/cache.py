"""The prepared-slice cache: every case of a dataset prepared once, read by any trial.

``mismatch data prepare`` (:func:`prepare_dataset`) writes::

    PREPARED_DIR/
      manifest.json           format, fingerprint, recipe, storage dtype, cases, per-case facts
                              (grid shape, voxel spacing in mm from the header, ...), the raw
                              files' sizes / times / sha256, the written files' sha256
      index.parquet           one row per sample: case_id, row, slice_index, patch,
                              fg_pixels (in the sample), slice_fg_pixels (whole slice)
      cases/<case>/images.npy (N, C * context_slices, h, w) float32 (or float16): np.load(mmap_mode="r")
      cases/<case>/labels.npy (N, h, w) uint8 binary foreground

A case's arrays hold every qualifying slice, in ascending slice order, already clipped,
normalised, stacked with its neighbours and cropped: ``centre`` one patch per slice,
``corners`` and ``random-corner`` all four corners (slice-major, in the order of
:data:`mismatch.data.preprocess.CORNERS`; a trial draws its random corner from them),
``none`` the full slice unpadded (a trial pads to its own cases' largest size, with the
case's pad value from the manifest). Splits and selection are not in the cache: a trial
does them from the index, so one cache serves every fold and labelled count.

The fingerprint is the raw data fingerprint (recipe + case list + bytes of every raw file;
see :func:`mismatch.data.recipe.data_fingerprint`), so a float32 cache and the raw data it
came from have the same value; a float16 cache hashes the storage dtype in too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mismatch.atomic import as_disk_full, is_disk_full, remove_stale_siblings, temporary_sibling
from mismatch.config import DATA_PRESETS, DataSpec
from mismatch.data import preprocess as pp
from mismatch.data.check import Progress, check_dataset
from mismatch.data.errors import DataCheckError, DataError, FileProblemError
from mismatch.data.layouts import Layout, class_names, get_layout
from mismatch.data.publish import publish, refuse_non_empty
from mismatch.data.recipe import (
    SliceSet,
    case_samples,
    corner_names,
    data_fingerprint,
    dataset_files,
    file_sha256,
    pad_value,
    prepare_image,
    recipe,
)
from mismatch.data.volumes import Case, CaseGeometry

CACHE_FORMAT = 2
"""2: ``case_info`` holds each case's voxel ``spacing`` (mm, (S, H, W)); a format-1 cache is prepared again."""
MANIFEST = "manifest.json"
INDEX = "index.parquet"
CASES_DIR = "cases"
StorageDtype = Literal["float32", "float16"]


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` did: ``up_to_date`` when the cache already matched."""

    path: Path
    fingerprint: str
    up_to_date: bool
    cases: int
    samples: int
    seconds: float
    study_data: dict[str, Any]
    removed_stale: list[Path] = field(default_factory=list)
    """Temporary folders of killed earlier runs (``.NAME.tmp-*``) that this run deleted."""


def prepare_dataset(
    data: DataSpec,
    out_dir: str | Path,
    *,
    dtype: StorageDtype = "float32",
    allow_empty: bool = False,
    force: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> PrepareResult:
    """Prepare every case of the raw dataset ``data.root`` into a cache at ``out_dir``.

    Does nothing when ``out_dir`` already holds an intact cache of the same fingerprint
    (same recipe, dtype and raw file bytes; unchanged files are recognised by size and
    modification time), unless ``force``. Runs every check of
    :func:`mismatch.data.check.check_dataset` in the same pass; any problem raises
    :class:`DataCheckError` listing them all, and nothing is left behind (the cache is
    built in a temporary sibling folder and renamed into place). An existing cache is
    replaced; any other non-empty ``out_dir`` is refused unless ``overwrite``.
    """
    started = time.perf_counter()
    if data.root is None:
        raise DataError("prepare reads a raw dataset: give DataSpec.root (not synthetic / prepared)")
    if dtype not in ("float32", "float16"):
        raise DataError(f"cache dtype must be float32 or float16, got {dtype!r}")
    root, out = Path(data.root).expanduser().absolute(), Path(out_dir).expanduser().absolute()
    layout = get_layout(data.layout)
    stale = remove_stale_siblings(out)
    old = _existing_manifest(out, overwrite)
    try:
        inputs, fingerprint = _hash_inputs(root, layout, data, dtype, old)
    except (DataError, OSError):
        inputs, fingerprint = {}, None  # a file is missing or unreadable: the checks below say which
    if old is not None and not force and old.get("fingerprint") == fingerprint and _intact(out, old):
        return _result(out, old, True, started, stale)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(out)
    try:
        writer = _CaseWriter(tmp, data, dtype)
        report = check_dataset(layout, root, label_values=data.label_values, foreground_labels=data.foreground_labels,
                               allow_empty=allow_empty, on_case=writer, progress=progress)
        if not report.ok:
            raise DataCheckError(root, report.problems)
        if fingerprint is None:  # every file read fine after all (it appeared meanwhile): hash now
            inputs, fingerprint = _hash_inputs(root, layout, data, dtype, None)
        _refuse_changed_inputs(root, inputs)
        manifest = writer.finish(report.cases, fingerprint, inputs, root, layout, data)
        publish(tmp, out, overwrite=True)
    except OSError as err:  # a full disk: one line naming the cache (the finally removes tmp)
        if is_disk_full(err):
            raise as_disk_full(err, out) from err
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _result(out, manifest, False, started, stale)


def cache_fingerprint(data_fp: str, dtype: str) -> str:
    """The cache's fingerprint: the raw data fingerprint for float32, else hashed with the dtype."""
    if dtype == "float32":
        return data_fp
    return hashlib.sha256(json.dumps({"data": data_fp, "dtype": dtype}, sort_keys=True).encode()).hexdigest()


def study_data(manifest: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``data:`` section a study uses to name this cache: path, preset, overrides, fingerprint."""
    preset = manifest.get("preset")
    base = DATA_PRESETS.get(preset, {}) if preset else {}
    section: dict[str, Any] = {"prepared": str(path)}
    if preset:
        section["preset"] = preset
    for key, value in manifest["recipe"].items():
        if key not in base or _json(base[key]) != _json(value):
            section[key] = value
    section["fingerprint"] = manifest["fingerprint"]
    return section


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _result(
    out: Path, manifest: dict[str, Any], up_to_date: bool, started: float, stale: list[Path]
) -> PrepareResult:
    return PrepareResult(
        path=out,
        fingerprint=manifest["fingerprint"],
        up_to_date=up_to_date,
        cases=len(manifest["cases"]),
        samples=sum(info["samples"] for info in manifest["case_info"].values()),
        seconds=time.perf_counter() - started,
        study_data=study_data(manifest, out),
        removed_stale=stale,
    )


def _existing_manifest(out: Path, overwrite: bool) -> dict[str, Any] | None:
    """The manifest of the cache at ``out`` (None if there is none); refuses foreign folders."""
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            return json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
    refuse_non_empty(out, overwrite)
    return None


def _hash_inputs(
    root: Path, layout: Layout, data: DataSpec, dtype: str, old: dict[str, Any] | None
) -> tuple[dict[str, dict[str, Any]], str]:
    """Size, mtime and sha256 of every raw file, and the cache fingerprint.

    A file whose size and mtime equal the previous cache's record keeps its recorded sha256.
    """
    known = (old or {}).get("source", {}).get("files", {})
    cases = layout.list_cases(root)
    inputs: dict[str, dict[str, Any]] = {}
    for path in dataset_files(root, layout, cases):
        rel = str(path.relative_to(root))
        stat = path.stat()
        entry: dict[str, Any] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        prior = known.get(rel, {})
        same = prior.get("size") == entry["size"] and prior.get("mtime_ns") == entry["mtime_ns"]
        entry["sha256"] = prior["sha256"] if same and "sha256" in prior else file_sha256(path)
        inputs[rel] = entry
    data_fp = data_fingerprint(root, layout, cases, data, {k: v["sha256"] for k, v in inputs.items()})
    return inputs, cache_fingerprint(data_fp, dtype)


def _refuse_changed_inputs(root: Path, inputs: dict[str, dict[str, Any]]) -> None:
    """Raise DataError if a raw file changed (size or mtime) while it was being prepared."""
    for rel, entry in inputs.items():
        try:
            stat = (root / rel).stat()
        except OSError:
            raise DataError(f"{root / rel} disappeared while the dataset was being prepared") from None
        if (stat.st_size, stat.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
            raise DataError(f"{root / rel} changed while the dataset was being prepared: run prepare again")


def _intact(out: Path, manifest: dict[str, Any]) -> bool:
    """Every file the manifest lists exists with its recorded size (cheap: no hashing)."""
    if manifest.get("format") != CACHE_FORMAT or not (out / INDEX).is_file():
        return False
    for info in manifest.get("case_info", {}).values():
        for rel, size in info["bytes"].items():
            path = out / rel
            if not path.is_file() or path.stat().st_size != size:
                return False
    return True


class _CaseWriter:
    """Called by the checker with each good case: prepares it and writes its arrays."""

    def __init__(self, folder: Path, data: DataSpec, dtype: str) -> None:
        self.folder, self.data, self.dtype = folder, data, dtype
        self.rows: list[dict[str, Any]] = []
        self.case_info: dict[str, dict[str, Any]] = {}
        self.in_channels: int | None = None
        self.channel_names: tuple[str, ...] = ()

    def __call__(self, case: Case) -> None:
        data = self.data
        image = prepare_image(case, data)  # (C, S, H, W) float32
        mask = pp.label_map(case.label, data.foreground_labels, data.classes)  # (S, H, W)
        index = pp.qualifying_slices(mask, data.min_foreground)
        samples = case_samples(case.case_id, image, mask, index, data, pad_shape=None, rng=None)
        files = self._write_arrays(case.case_id, samples)
        self._add_rows(case.case_id, samples, np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1))
        corners = data.crop in ("corners", "random-corner")
        self.case_info[case.case_id] = {
            "height": int(mask.shape[1]), "width": int(mask.shape[2]), "slices": int(mask.shape[0]),
            "spacing": [float(v) for v in case.spacing],
            "qualifying": int(len(index)), "samples": int(len(samples)), "patches_per_slice": 4 if corners else 1,
            "pad_value": [float(v) for v in pad_value(image, data.context_slices)],
            "sample_shape": list(samples.images.shape[1:]),
            **files,
        }
        self.in_channels = int(samples.images.shape[1])
        self.channel_names = case.channel_names

    def _write_arrays(self, case_id: str, samples: SliceSet) -> dict[str, Any]:
        """Save the case's images (in the storage dtype) and labels; their paths, sizes, sha256."""
        folder = self.folder / CASES_DIR / case_id
        folder.mkdir(parents=True)
        paths = {"images": folder / "images.npy", "labels": folder / "labels.npy"}
        np.save(paths["images"], samples.images.astype(self.dtype, copy=False))  # (N, C, h, w)
        np.save(paths["labels"], samples.labels)  # (N, h, w)
        rel = {k: str(p.relative_to(self.folder)) for k, p in paths.items()}
        return {
            **rel,
            "bytes": {rel[k]: p.stat().st_size for k, p in paths.items()},
            "sha256": {rel[k]: file_sha256(p) for k, p in paths.items()},
        }

    def _add_rows(self, case_id: str, samples: SliceSet, slice_fg: np.ndarray) -> None:
        """One index row per sample: where it is stored, where it came from, its foreground."""
        fg = np.count_nonzero(samples.labels.reshape(len(samples), -1), axis=1)
        for row, (s, patch) in enumerate(zip(samples.slice_index.tolist(), samples.patch)):
            self.rows.append({"case_id": case_id, "row": row, "slice_index": s, "patch": patch,
                              "fg_pixels": int(fg[row]), "slice_fg_pixels": int(slice_fg[s])})

    def finish(
        self, cases: Sequence[str], fingerprint: str, inputs: dict[str, Any], root: Path, layout: Layout,
        data: DataSpec,
    ) -> dict[str, Any]:
        """Write the index and the manifest (last: a folder without one is not a cache)."""
        import pandas as pd

        columns = ["case_id", "row", "slice_index", "patch", "fg_pixels", "slice_fg_pixels"]
        table = pd.DataFrame(self.rows, columns=columns).astype(
            {"row": "int32", "slice_index": "int64", "fg_pixels": "int64", "slice_fg_pixels": "int64"})
        table.to_parquet(self.folder / INDEX, index=False)
        manifest = {
            "format": CACHE_FORMAT,
            "fingerprint": fingerprint,
            "dtype": self.dtype,
            "layout": layout.name,
            "preset": data.preset,
            "recipe": recipe(data),
            "channel_names": list(self.channel_names),
            **({"class_names": list(class_names(layout, root, data.classes))} if data.classes is not None else {}),
            "in_channels": self.in_channels,
            "cases": list(cases),
            "case_info": self.case_info,
            "source": {"root": str(root), "files": inputs},
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        path = self.folder / MANIFEST
        path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        return manifest


# ----------------------------------------------------------------------------- reading


class PreparedDataset:
    """A prepared cache opened for reading: manifest, index, and each case's arrays.

    ``arrays(case)`` gives the memory-mapped (images, labels) of a case;
    :meth:`gather` the samples a trial selected, as float32 in memory. With ``verify`` (the
    default) the first read of a case hashes its array files and compares them with the sha256
    that prepare recorded, so a cache changed since (same size, a NaN written in) is an error
    naming the file, never silent training; it costs well under 1% of a trial
    (``bench/bench_cache_verify.py``, docs/data.md).
    """

    def __init__(self, path: Path, manifest: dict[str, Any], index: dict[str, np.ndarray], verify: bool = True) -> None:
        self.path = path
        self.manifest = manifest
        self.fingerprint: str = manifest["fingerprint"]
        self.cases: list[str] = list(manifest["cases"])
        self.recipe: dict[str, Any] = manifest["recipe"]
        self.verify_reads = verify
        self._verified: set[str] = set()
        self._slices = _slices_per_case(index, self.cases)

    def require_recipe(self, spec_recipe: dict[str, Any]) -> None:
        """Raise DataError, naming every differing field, when the spec's recipe is not the cache's."""
        # ``classes`` is in a recipe only when given: a binary spec on a multi-class cache differs too
        keys = list(dict.fromkeys([*spec_recipe, *(["classes"] if "classes" in self.recipe else [])]))
        diff = [f"{k}: cache {_json(self.recipe.get(k))}, spec {_json(spec_recipe.get(k))}"
                for k in keys if _json(self.recipe.get(k)) != _json(spec_recipe.get(k))]
        if diff:
            preset = self.manifest.get("preset")
            hint = f" (the cache was prepared with preset {preset!r}: set it in the spec)" if preset else ""
            raise DataError(f"the prepared cache {self.path} was made with another recipe than the spec's{hint}: "
                            + "; ".join(diff))

    def class_names(self, classes: Sequence[int] | None) -> tuple[str, ...]:
        """Names of the foreground classes (as prepared; ``("foreground",)`` when binary)."""
        if classes is None:
            return ("foreground",)
        stored = self.manifest.get("class_names") or []
        return tuple(stored) if len(stored) == len(classes) else tuple(f"class {int(v)}" for v in classes)

    def qualifying(self, cases: Sequence[str]) -> dict[str, np.ndarray]:
        """Qualifying slice indices (ascending) of each of ``cases``."""
        return {c: self._slices[c] for c in cases}

    def slice_shape(self, cases: Sequence[str]) -> tuple[int, int]:
        """The largest full-slice (H, W) among ``cases`` (what ``crop: none`` pads to)."""
        info = self.manifest["case_info"]
        return max(info[c]["height"] for c in cases), max(info[c]["width"] for c in cases)

    def geometry(self, cases: Sequence[str]) -> dict[str, CaseGeometry]:
        """Each case's grid shape (S, H, W) and voxel spacing (mm) as read from its header."""
        info = self.manifest["case_info"]
        return {c: CaseGeometry((info[c]["slices"], info[c]["height"], info[c]["width"]),
                                tuple(float(v) for v in info[c]["spacing"]))  # type: ignore[arg-type]
                for c in cases}

    def arrays(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Memory-mapped ``images`` (N, C, h, w) and ``labels`` (N, h, w) of one case (its files
        checked against their checksums on the first read, see the class)."""
        info = self.manifest["case_info"][case_id]
        if self.verify_reads and case_id not in self._verified:
            self.check_case(case_id)
        try:
            images = np.load(self.path / info["images"], mmap_mode="r")
            labels = np.load(self.path / info["labels"], mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DataError(f"prepared cache {self.path}: cannot read the arrays of case {case_id!r}: {err}") from None
        return images, labels

    def gather(
        self, chosen: dict[str, np.ndarray], pad_shape: tuple[int, int], rng: np.random.Generator,
        expose_labels: bool = True,
    ) -> SliceSet:
        """The samples of the chosen slices of each case (case order kept), as a trial sees them.

        ``chosen`` maps a case to its slice indices (qualifying, ascending). The rows are
        copied once, from the memory-mapped arrays straight into one float32 array
        (N, C, H, W); ``crop: none`` slices are padded to ``pad_shape`` rounded up to a
        multiple of 8. Without ``expose_labels`` the labels are zeros and are not read.
        """
        plans = [(case, *self._rows(case, index, rng)) for case, index in chosen.items()]
        n = sum(len(rows) for _, rows, _, _ in plans)
        c, h, w = self._sample_shape(pad_shape)
        images = np.empty((n, c, h, w), np.float32)
        labels = np.zeros((n, h, w), np.uint8)
        start = 0
        for case, rows, _, _ in plans:
            stop = start + len(rows)
            source_images, source_labels = self.arrays(case)
            if self.recipe["crop"] == "none":
                sh, sw = source_images.shape[-2:]
                images[start:stop] = np.asarray(self.manifest["case_info"][case]["pad_value"], np.float32)[:, None, None]
                images[start:stop, :, :sh, :sw] = _take(source_images, rows)
                if expose_labels:
                    labels[start:stop, :sh, :sw] = _take(source_labels, rows)
            else:
                images[start:stop] = _take(source_images, rows)
                if expose_labels:
                    labels[start:stop] = _take(source_labels, rows)
            start = stop
        return SliceSet(
            images=images,
            labels=labels,
            case_ids=[case for case, rows, _, _ in plans for _ in range(len(rows))],
            slice_index=np.concatenate([s for _, _, _, s in plans]) if plans else np.zeros(0, np.int64),
            patch=[p for _, _, patches, _ in plans for p in patches],
        )

    def _rows(self, case_id: str, index: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Rows of the case's arrays holding slices ``index``, their patch names and slice indices."""
        slices, crop = self._slices[case_id], self.recipe["crop"]
        pos = np.searchsorted(slices, index)
        if np.any(pos >= len(slices)) or np.any(slices[np.minimum(pos, len(slices) - 1)] != index):
            raise DataError(f"prepared cache {self.path}: case {case_id!r} lacks some of slices {index.tolist()}")
        per = self.manifest["case_info"][case_id]["patches_per_slice"]
        if crop == "corners":
            patches = corner_names("corners", len(index), None)
            rows = (pos[:, None] * per + np.arange(per)[None, :]).reshape(-1)
        elif crop == "random-corner":
            patches = corner_names("random-corner", len(index), rng)
            rows = pos * per + np.array([pp.CORNERS.index(p) for p in patches], dtype=np.int64)
        else:
            patches = ["full" if crop == "none" else "centre"] * len(index)
            rows = pos
        return rows, patches, np.repeat(index, len(rows) // max(len(index), 1)).astype(np.int64)

    def _sample_shape(self, pad_shape: tuple[int, int]) -> tuple[int, int, int]:
        """(C, H, W) of the samples a trial gets."""
        if self.recipe["crop"] == "none":
            return int(self.manifest["in_channels"]), pp.round_up(pad_shape[0], 8), pp.round_up(pad_shape[1], 8)
        size = int(self.recipe["crop_size"])
        return int(self.manifest["in_channels"]), size, size

    def check_case(self, case_id: str) -> None:
        """Raise DataError naming the first array file of ``case_id`` whose sha256 is not the one
        prepare recorded in the manifest; the case counts as checked for this open cache after."""
        for rel, digest in self.manifest["case_info"][case_id].get("sha256", {}).items():
            if file_sha256(self.path / rel) != digest:
                raise DataError(f"prepared cache file {self.path / rel} has changed since `mismatch data prepare` "
                                "wrote it (its sha256 differs from the manifest's): prepare the cache again")
        self._verified.add(case_id)

    def verify(self) -> list[str]:
        """Re-hash every array file; the files whose sha256 differs from the manifest's (slow)."""
        bad = []
        for info in self.manifest["case_info"].values():
            for rel, digest in info["sha256"].items():
                try:
                    if file_sha256(self.path / rel) != digest:
                        bad.append(rel)
                except FileProblemError:
                    bad.append(rel)
        return bad


def _take(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]``, as a plain slice (no index array) when the rows are consecutive."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
        return array[rows[0] : rows[-1] + 1]
    return array[rows]


def open_prepared(path: str | Path, verify: bool = True) -> PreparedDataset:
    """Open the cache at ``path``; a missing, foreign, unfinished or damaged cache raises DataError.

    ``verify``: check each case's array files against their recorded sha256 when first read
    (:class:`PreparedDataset`); off only for measuring what the check costs."""
    path = Path(path).expanduser()
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise DataError(f"prepared cache not found: {path}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} is not a prepared cache (no {MANIFEST}; write one with `mismatch data prepare`)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {manifest_path}: {err}") from None
    if manifest.get("format") != CACHE_FORMAT:
        raise DataError(f"{manifest_path}: cache format {manifest.get('format')!r}, this version reads "
                        f"{CACHE_FORMAT}: prepare it again")
    if not _intact(path, manifest):
        raise DataError(f"prepared cache {path} is damaged (a file is missing or has the wrong size): prepare it again")
    return PreparedDataset(path, manifest, _read_index(path / INDEX), verify)


def _read_index(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["case_id", "row", "slice_index"])
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _slices_per_case(index: dict[str, np.ndarray], cases: Sequence[str]) -> dict[str, np.ndarray]:
    """Each case's qualifying slices (ascending), from the index rows."""
    out: dict[str, np.ndarray] = {}
    case_ids, slices = index["case_id"], index["slice_index"].astype(np.int64)
    for case in cases:
        out[case] = np.unique(slices[case_ids == case])
    return out

