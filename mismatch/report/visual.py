"""Fig. 7: prediction maps over the image, coloured by outcome, for a few fixed test slices.

Maps come from ``predictions/<trial_id>.npz`` (arrays ``case_ids``, ``slice_index``, ``patch``,
``image`` float16, ``label`` uint8, ``prob`` uint8 = round(255 p)). For one replicate and
count, each main column contributes the trial that shares the reference's test set; slices
present in every chosen file are shown. Colours follow the paper: ground truth yellow, true
positives green, false positives red, false negatives blue. Images are inline PNGs, encoded
here with zlib so the report needs no imaging library.

Orientation: a stored slice is (H, W) in the order the data files keep their in-plane axes, which
differs by format (:mod:`mismatch.data.volumes`): a MetaImage slice is (y, x), as ITK shows it, and
a NIfTI slice is (i, j), its transpose. NIfTI slices are therefore transposed for display, so both
are drawn with the file's x axis across and y axis down: for files stored in DICOM/ITK order (LPS,
as scanners' converters and ITK write them) that is the radiological convention, the patient's
right on the image's left and anterior at the top. The affine is not read: the caption says so.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mismatch.report.design import Design
from mismatch.report.load import StudyData

THRESHOLD_U8 = 128  # round(255 p) >= 128  <=>  p >= 0.5 (up to the rounding of the stored map)
COLOURS = {"gt": (255, 215, 0), "tp": (0, 200, 0), "fp": (230, 0, 0), "fn": (30, 90, 255)}
ALPHA = 0.55
METAIMAGE_LAYOUTS = frozenset({"carve14"})  # every other layout reads NIfTI files
RADIOLOGICAL = ("axial slices in the radiological convention: the patient's right on the image's left, anterior at "
                "the top, for files stored in DICOM/ITK (LPS) order; the files' affines are not read")


@dataclass(frozen=True)
class VisualGrid:
    """Rows of PNG data URIs: per slice, the image, the ground truth, then one per column."""

    columns: list[str]
    slices: list[str]
    cells: list[list[str]]
    trials: dict[str, str]  # column key -> trial id
    replicate: int
    value: int
    orientation: str = RADIOLOGICAL  # how the slices are drawn, for the caption


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 array as an 8-bit RGB PNG."""
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def data_uri(rgb: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of an RGB array."""
    return "data:image/png;base64," + base64.b64encode(encode_png(rgb)).decode("ascii")


def grey(image: np.ndarray) -> np.ndarray:
    """Image -> (H, W, 3) uint8, contrast stretched between its 1st and 99th percentiles."""
    img = np.nan_to_num(image.astype(np.float32))
    lo, hi = np.percentile(img, [1, 99])
    scaled = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=2)


def overlay(base: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Blend each boolean mask's colour into ``base`` (masks do not overlap)."""
    out = base.astype(np.float32)
    for name, mask in masks.items():
        out[mask] = (1 - ALPHA) * out[mask] + ALPHA * np.array(COLOURS[name], np.float32)
    return out.astype(np.uint8)


def outcome_masks(prob: np.ndarray, label: np.ndarray) -> dict[str, np.ndarray]:
    """True-positive, false-positive and false-negative masks of a stored probability map."""
    pred, truth = prob >= THRESHOLD_U8, label.astype(bool)
    return {"tp": pred & truth, "fp": pred & ~truth, "fn": ~pred & truth}


def slice_layout(spec_json: object) -> str | None:
    """The data layout named by a trial's ``spec_json`` (None when it is absent or unreadable)."""
    try:
        layout = json.loads(str(spec_json)).get("data", {}).get("layout")
    except (ValueError, AttributeError):
        return None
    return layout if isinstance(layout, str) else None


def transposed_for_display(layout: str | None) -> bool:
    """Whether slices of ``layout`` are stored as (i, j) (NIfTI) and so are transposed to be drawn."""
    return layout is not None and layout not in METAIMAGE_LAYOUTS


def _load(data: StudyData, trial_id: str) -> dict[str, np.ndarray] | None:
    path = data.prediction_path(trial_id)
    if path is None:
        return None
    with data.fs.open_input_file(path) as handle:
        with np.load(io.BytesIO(handle.read()), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


def _keys(maps: dict[str, np.ndarray]) -> list[str]:
    return [f"{c} / slice {s} / {p}" for c, s, p in zip(maps["case_ids"], maps["slice_index"], maps["patch"],
                                                        strict=True)]


def _choose(data: StudyData, trials: pd.DataFrame, design: Design, value: int) -> tuple[int, dict[str, str]] | None:
    """The replicate and, per column, the trial whose maps to show (the reference must have maps)."""
    ref = design.reference or design.columns[-1]
    for rep in design.replicates:
        chosen = {}
        for col in [ref] + [c for c in design.columns if c != ref]:
            sel = design.column_trials(trials, col, value)
            sel = sel[(sel["status"] == "completed") & (sel[design.replicate] == rep)]
            found = next((t for t in sel.index if data.prediction_path(t)), None)
            if found:
                chosen[col.key] = found
        if ref.key in chosen:
            return rep, chosen
    return None


def visual_grid(data: StudyData, trials: pd.DataFrame, design: Design, value: int, n: int = 4) -> VisualGrid | None:
    """Fig. 7 at axis ``value``, or None when the study stored no prediction maps there."""
    if data.base is None:
        return None
    choice = _choose(data, trials, design, value)
    if choice is None:
        return None
    rep, chosen = choice
    maps = {k: m for k, m in ((k, _load(data, t)) for k, t in chosen.items()) if m is not None}
    order = [c.key for c in design.columns if c.key in maps]
    common = set.intersection(*(set(_keys(m)) for m in maps.values()))
    first = maps[order[0]] if design.reference is None else maps[design.reference.key]
    keys = [k for k in _keys(first) if k in common][:n]
    spec = trials["spec_json"].get(chosen[order[0]]) if "spec_json" in trials else None
    layout = slice_layout(spec)

    def shown(a: np.ndarray) -> np.ndarray:
        return a.T if transposed_for_display(layout) else a

    cells = []
    for key in keys:
        i0 = _keys(first).index(key)
        base = grey(shown(first["image"][i0]))
        row = [data_uri(base), data_uri(overlay(base, {"gt": shown(first["label"][i0]).astype(bool)}))]
        for col in order:
            i = _keys(maps[col]).index(key)
            masks = outcome_masks(shown(maps[col]["prob"][i]), shown(maps[col]["label"][i]))
            row.append(data_uri(overlay(base, masks)))
        cells.append(row)
    how = (RADIOLOGICAL if layout is not None else
           "slices drawn as stored (rows: the first in-plane axis); the trials name no data layout")
    return VisualGrid(order, keys, cells, {k: chosen[k] for k in order}, rep, value, how)
