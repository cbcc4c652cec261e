"""Row builders: the one place that puts values into the schema's columns, in the schema's order.

They take plain values (no torch, no trial objects), so the trial code, tests and synthetic
data build rows the same way. :mod:`mismatch.trial.evaluate` gathers the values of a trial.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mismatch.results.metrics import bin_values, class_metrics, ece_from_bins, image_metrics
from mismatch.results.schema import (
    CASE_COLUMNS,
    CASE_PATCH,
    CASE_SLICE_INDEX,
    CLASS_COLUMNS,
    COMPLETED,
    FAILED,
    IDENTITY,
    IMAGE_KEY,
    LOSS_PREFIX,
    PRUNED,
    SCHEMA_VERSION,
    SURFACE_METRICS,
    TRIAL_DEFAULTS,
    TRIAL_RESULT,
    TRIAL_RUN,
)


def identity(
    *,
    study: str,
    trial_id: str,
    method: str,
    model: str,
    alpha: float,
    labelled_slices: int,
    unlabelled_slices: int,
    fold: int,
    seed: int,
    dataset_fingerprint: str,
    label_draw: int = 0,
) -> dict[str, Any]:
    """The identity columns of a trial (first in every table), with the current schema version."""
    values = dict(schema_version=SCHEMA_VERSION, study=study, trial_id=trial_id, method=method, model=model,
                  alpha=alpha, labelled_slices=labelled_slices, unlabelled_slices=unlabelled_slices, fold=fold,
                  seed=seed, label_draw=label_draw, dataset_fingerprint=dataset_fingerprint)
    return {name: values[name] for name in IDENTITY}


def image_rows(ident: Mapping[str, Any], keys: Sequence[tuple[str, int, str]], prob: np.ndarray,
               labels: np.ndarray) -> pd.DataFrame:
    """The images table: one row per (case_id, slice_index, patch) key with its metrics."""
    rows = []
    for i, key in enumerate(keys):
        rows.append({**ident, **dict(zip(IMAGE_KEY, key)), **image_metrics(prob[i], labels[i])})
    return pd.DataFrame(rows)


def case_rows(ident: Mapping[str, Any], cases: Sequence[Mapping[str, Any]]) -> pd.DataFrame | None:
    """The cases table: identity then each case's CASE_COLUMNS, in the schema's order (None if no case)."""
    if not cases:
        return None
    return pd.DataFrame([{**ident, **{c: case[c] for c in CASE_COLUMNS}} for case in cases])


def image_class_records(keys: Sequence[tuple[str, int, str]], prob: np.ndarray, labels: np.ndarray,
                        class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The image-level classes records of ``prob`` (N, C, *spatial): one per image and foreground class."""
    out = []
    for i, key in enumerate(keys):
        for metrics in class_metrics(prob[i], labels[i]):
            out.append(class_record("image", key, class_names, metrics))
    return out


def class_record(level: str, key: tuple[str, int, str], class_names: Sequence[str],
                 metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One classes record (no identity): ``metrics`` holds ``class_index`` and the class's metrics;
    surface metrics it lacks are NaN (image rows)."""
    k = int(metrics["class_index"])
    name = class_names[k - 1] if k - 1 < len(class_names) else f"class {k}"
    nan = {m: float("nan") for m in SURFACE_METRICS}
    return {"level": level, **dict(zip(IMAGE_KEY, key)), "class_name": name, **nan, **metrics}


def case_class_key(case_id: str) -> tuple[str, int, str]:
    """The IMAGE_KEY of a case-level classes row."""
    return (case_id, CASE_SLICE_INDEX, CASE_PATCH)


def class_rows(ident: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> pd.DataFrame | None:
    """The classes table: identity then each record's CLASS_COLUMNS, in the schema's order (None if none)."""
    if not records:
        return None
    return pd.DataFrame([{**ident, **{c: r[c] for c in CLASS_COLUMNS}} for r in records])


def epoch_rows(ident: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The epochs table: identity then each epoch's record (epoch, time_s, loss_*, val_*)."""
    return pd.DataFrame([{**ident, **h} for h in history])


def decoder_row(ident: Mapping[str, Any], index: int, name: str, totals: Mapping[str, Any]) -> dict[str, Any]:
    """One decoder's row from its test-set sums: bins, pooled ECE, mean foreground probability.

    ``totals`` holds the bin sums (``count``, ``conf_sum``, ``correct_sum``) and ``fg_prob_sum``
    / ``fg_pixels``; a test set without foreground gives a NaN ``mean_fg_prob``.
    """
    fg = totals["fg_pixels"]
    return {**ident, "decoder": index, "decoder_name": name,
            "ece": ece_from_bins(totals["count"], totals["conf_sum"], totals["correct_sum"]),
            "mean_fg_prob": totals["fg_prob_sum"] / fg if fg else float("nan"),
            **bin_values(totals)}


def decoder_rows(ident: Mapping[str, Any], names: Sequence[str],
                 totals: Sequence[Mapping[str, Any]] | None) -> pd.DataFrame | None:
    """The decoders table (None for a single-decoder network)."""
    if not totals:
        return None
    return pd.DataFrame([decoder_row(ident, i, name, t) for i, (name, t) in enumerate(zip(names, totals))])


def final_losses(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The last epoch's loss terms, keyed by term (``loss_dice`` -> ``dice``)."""
    return {k[len(LOSS_PREFIX):]: v for k, v in history[-1].items() if k.startswith(LOSS_PREFIX)}


def completed_trial_row(ident: Mapping[str, Any], result: Mapping[str, Any], run: Mapping[str, Any],
                        times: Mapping[str, str]) -> dict[str, Any]:
    """The trials row of a completed trial.

    ``result`` holds TRIAL_RESULT's columns but ``status`` and ``error``, ``run`` TRIAL_RUN's,
    ``times`` ``started_at`` and ``finished_at``; columns come out in the schema's order.
    """
    filled = {**result, "status": COMPLETED, "error": None}
    return {**ident, **{c: filled[c] for c in TRIAL_RESULT}, **{c: run[c] for c in TRIAL_RUN},
            "started_at": times["started_at"], "finished_at": times["finished_at"]}


def failed_trial_row(ident: Mapping[str, Any], error: BaseException, *, stream: str, budget: str, spec_json: str,
                     code_version: str, torch_version: str, started_at: str, finished_at: str) -> dict[str, Any]:
    """The trials row of a trial that failed for good: identity, the error, protocol, versions, times."""
    return {**ident, "status": FAILED, "error": f"{type(error).__name__}: {error}", "stream": stream,
            "budget": budget, "spec_json": spec_json, "code_version": code_version, "torch_version": torch_version,
            "started_at": started_at, "finished_at": finished_at}


def unbuildable_trial_row(trial_id: str, raw: Mapping[str, Any], error: BaseException, now: str) -> dict[str, Any]:
    """The trials row of a trial whose spec does not validate, from its raw payload ``raw``:
    what can be read of its identity (study, method), the error and the raw spec."""
    method = raw.get("method")
    return {"schema_version": SCHEMA_VERSION, "study": str(raw.get("study", "adhoc")), "trial_id": trial_id,
            "method": str(method.get("name", "")) if isinstance(method, dict) else str(method or ""),
            "status": FAILED, "error": f"{type(error).__name__}: {error}",
            "spec_json": json.dumps(raw, sort_keys=True, default=str), "started_at": now, "finished_at": now}


def pruned_trial_row(ident: Mapping[str, Any], reason: str, *, stream: str, budget: str, spec_json: str, epochs: int,
                     train_time_s: float, code_version: str, torch_version: str, started_at: str,
                     finished_at: str) -> dict[str, Any]:
    """The trials row of a search run stopped at a rung: identity, why, protocol, epochs trained and their time."""
    return {**ident, "status": PRUNED, "error": reason, "stream": stream, "budget": budget, "spec_json": spec_json,
            "train_time_s": float(train_time_s), "epochs": int(epochs), "code_version": code_version,
            "torch_version": torch_version, "started_at": started_at, "finished_at": finished_at}


def placement_columns(node_id: str, node_ip: str) -> dict[str, str]:
    """The trials columns of where a trial ran: its Ray node's id and IP."""
    return {"ray_node_id": node_id, "node_ip": node_ip}


def fusion_columns(group: str = "", size: int = 1) -> dict[str, Any]:
    """The trials columns of fusion: a trial's fused group and its size (``""``, 1: alone)."""
    return {"fuse_group": group, "fuse_size": int(size)}


def fill_trial_defaults(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Trials rows with the optional columns (:data:`TRIAL_DEFAULTS`) filled where a row, or
    every row (a store written before them), lacks them; only ``columns`` when given."""
    for name, default in TRIAL_DEFAULTS.items():
        if columns is not None and name not in columns:
            continue
        if name not in frame:
            frame[name] = [default] * len(frame)
        else:
            frame[name] = frame[name].where(frame[name].notna(), default)
        if name == "fuse_size" and len(frame):
            frame[name] = frame[name].astype("int64")
    return frame
