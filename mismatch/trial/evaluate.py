"""Evaluation of a trained trial, and its results rows.

Prediction (the snapshot ensemble, and each decoder's probability of a several-decoder
network), per-image metrics and calibration, prediction maps for the report, inference
timing, and the rows of every results table, built through :mod:`mismatch.results` (the
schema's only authority). The training loop (:mod:`mismatch.trial.loop`) calls :func:`validate`
every epoch and :func:`evaluate_trial` once at the end.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from mismatch import results
from mismatch.config import TrialSpec
from mismatch.data import SliceSet, TrialData
from mismatch.data.splits import make_all_splits
from mismatch.methods import Method
from mismatch.results import rows
from mismatch.results.schema import VAL_PREFIX
from mismatch.runtime import code_version, peak_memory_mb
from mismatch.trial.cases import case_tables
from mismatch.trial.state import NonFiniteProbabilityError, TrainState, TrialResult, utc_now
from mismatch.trial.volumes import (
    predict_test_volumes,
    time_volume_inference,
    validate_volumes,
    volume_case_tables,
    volume_class_rows,
    volume_image_rows,
    volume_prediction_maps,
)

EVAL_BATCH = 16
TIMED_IMAGES = 20


def check_probabilities(prob: np.ndarray, slices: SliceSet, where: str) -> None:
    """Raise :class:`NonFiniteProbabilityError` naming the first image (case id, slice, patch)
    of ``slices`` whose probability ``prob`` (N, H, W) has a NaN or infinite pixel."""
    finite = np.isfinite(prob.reshape(len(prob), -1)).all(axis=1)  # (N,)
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    i = int(bad[0])
    pixels = int(np.count_nonzero(~np.isfinite(prob[i])))
    raise NonFiniteProbabilityError(
        f"non-finite probability on {where} image case_id={slices.case_ids[i]!r} "
        f"slice_index={int(slices.slice_index[i])} patch={slices.patch[i]!r} ({pixels} pixels; "
        f"{len(bad)} of {len(prob)} images affected)"
    )


def _batch_probabilities(methods: list[Method], x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Snapshot-mean probability (B, 1, H, W) and, for several decoders, each decoder's."""
    per_decoder = [m.decoder_probabilities(x) for m in methods]
    if any(p is None for p in per_decoder):
        return sum(m.predict_proba(x) for m in methods) / len(methods), None
    decoders = [sum(ps) / len(methods) for ps in zip(*per_decoder)]  # each (B, 1, H, W)
    return sum(decoders) / len(decoders), decoders


@torch.no_grad()
def predict(
    methods: list[Method], images: np.ndarray, device: torch.device, labels: np.ndarray | None = None
) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
    """Mean probability of several snapshots: foreground (N, H, W) float32 for a binary task,
    class probabilities (N, C, H, W) for C > 2 classes (the methods' output decides).

    With ``labels`` and a several-decoder method, also each decoder's calibration summed over
    the images (from the same forward passes): reliability-bin sums and foreground confidence.
    """
    out: np.ndarray | None = None
    for m in methods:
        m.eval()
    totals: list[dict[str, Any]] | None = None
    for start in range(0, len(images), EVAL_BATCH):
        x = torch.from_numpy(images[start : start + EVAL_BATCH]).to(device)
        prob, decoders = _batch_probabilities(methods, x)
        batch = _as_numpy(prob)
        if out is None:
            out = np.empty((len(images), *batch.shape[1:]), dtype=np.float32)
        out[start : start + len(x)] = batch
        if labels is not None and decoders is not None:
            y = labels[start : start + len(x)]
            sums = [decoder_calibration(_as_numpy(d), y) for d in decoders]
            totals = sums if totals is None else [results.add_bins(a, b) for a, b in zip(totals, sums)]
    if out is None:  # no image: the binary shape (a multi-class set is never empty where it matters)
        out = np.empty((0, *images.shape[2:]), dtype=np.float32)
    return out, totals


def _as_numpy(prob: torch.Tensor) -> np.ndarray:
    """(B, 1, *spatial) foreground probability -> (B, *spatial); (B, C, *spatial) kept for C > 2."""
    prob = prob[:, 0] if prob.shape[1] == 1 else prob
    return prob.float().cpu().numpy()


def decoder_calibration(prob: np.ndarray, label: np.ndarray) -> dict[str, Any]:
    """Sums that aggregate exactly: reliability bins and the probability on true foreground.

    ``prob`` (N, C, *spatial) (C > 2): top-label bins, and the probability of the true class on
    foreground pixels.
    """
    fg = label.astype(bool)
    if prob.ndim == label.ndim + 1:
        bins = results.top_label_bins(np.moveaxis(prob, 1, 0), label)  # classes first: (C, N, *spatial)
        true_prob = np.take_along_axis(prob, label.astype(np.int64)[:, None], axis=1)[:, 0]
        return {**bins, "fg_prob_sum": float(true_prob[fg].sum()), "fg_pixels": int(fg.sum())}
    bins = results.reliability_bins(prob, label)
    return {**bins, "fg_prob_sum": float(prob[fg].sum()), "fg_pixels": int(fg.sum())}


def image_metric_rows(methods: list[Method], slices: SliceSet, device: torch.device,
                      where: str = "validation") -> list[dict[str, Any]]:
    """Per-image metric rows for a slice set (a non-finite probability raises)."""
    prob, _ = predict(methods, slices.images, device)
    check_probabilities(prob, slices, where)
    return [results.image_metrics(prob[i], slices.labels[i]) for i in range(len(prob))]


def validate(method: Method, data: TrialData, device: torch.device) -> dict[str, float]:
    """Mean validation IoU, Dice and two-class mean Dice of the current weights (C > 2: each
    image's mean over foreground classes; 3D: of the whole validation volumes,
    :mod:`mismatch.evaluate_volumes`)."""
    if data.spatial_dims == 3:
        return validate_volumes(method, data.validation, data.window, device)
    frame = pd.DataFrame(image_metric_rows([method], data.validation, device))
    return {VAL_PREFIX + k: float(frame[k].mean()) for k in results.OVERLAP_METRICS}


def snapshot_methods(method: Method, state: TrainState) -> list[Method]:
    """One copy of the method per kept snapshot (the test-time ensemble)."""
    copies = []
    for weights in state.snapshots:
        m = copy.deepcopy(method)
        m.load_state_dict(weights)
        copies.append(m.eval())
    return copies


@torch.no_grad()
def time_inference(method: Method, images: np.ndarray, device: torch.device) -> float:
    """Median seconds of one forward pass on one image (one snapshot), after a warm-up."""
    method.eval()
    times = []
    for i in range(min(TIMED_IMAGES, len(images)) + 1):
        x = torch.from_numpy(images[i % len(images)][None]).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        method.predict_proba(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def choose_prediction_slices(slices: SliceSet, n: int) -> np.ndarray:
    """Indices of ``n`` test images chosen by a hash of their identity.

    Every trial that shares a test set keeps the same images, whatever its method or seed.
    """
    keys = [f"{c}|{s}|{p}" for c, s, p in zip(slices.case_ids, slices.slice_index, slices.patch)]
    order = sorted(range(len(keys)), key=lambda i: hashlib.sha1(keys[i].encode()).hexdigest())
    return np.array(sorted(order[:n]), dtype=np.int64)


def prediction_maps(slices: SliceSet, prob: np.ndarray, n: int) -> dict[str, np.ndarray] | None:
    """A few test images with label and probability, for the report's visual results.

    C > 2: ``prob`` is the probability of any foreground class (1 - background) and ``label``
    the class map, so the report's overlays show foreground against background.
    """
    if n == 0 or len(prob) == 0:
        return None
    if prob.ndim == slices.labels.ndim + 1:
        prob = 1.0 - prob[:, 0]
    idx = choose_prediction_slices(slices, n)
    centre = slices.images.shape[1] // 2
    return {
        "case_ids": np.array([slices.case_ids[i] for i in idx]),
        "slice_index": slices.slice_index[idx].astype(np.int64),
        "patch": np.array([slices.patch[i] for i in idx]),
        "image": slices.images[idx, centre].astype(np.float16),
        "label": slices.labels[idx].astype(np.uint8),
        "prob": np.round(prob[idx] * 255).astype(np.uint8),
    }


def trial_identity(spec: TrialSpec, *, model: str, alpha: float, unlabelled_slices: int,
                   dataset_fingerprint: str, labelled_slices: int | None = None) -> dict[str, Any]:
    """The identity columns of a trial: what the spec says, and what only the trial knows
    (``labelled_slices``: the slices used when the spec labels whole cases; else -1)."""
    if spec.protocol.labelled_slices is not None:
        labelled_slices = spec.protocol.labelled_slices
    return rows.identity(
        study=spec.study, trial_id=spec.trial_id(), method=spec.method.name, model=model, alpha=alpha,
        labelled_slices=labelled_slices if labelled_slices is not None else -1, unlabelled_slices=unlabelled_slices,
        fold=spec.protocol.fold, seed=spec.train.seed, label_draw=spec.protocol.label_draw,
        dataset_fingerprint=dataset_fingerprint,
    )


def identity_columns(spec: TrialSpec, method: Method, data: TrialData) -> dict[str, Any]:
    """The identity of a trial that ran: its network, alpha and pool size as built and used."""
    unlabelled = len(data.unlabelled.images) if method.uses_unlabelled else 0
    if data.spatial_dims == 3:  # whole labelled volumes: their slices (depth before padding)
        labelled = sum(int(shape[0]) for shape in data.labelled.shapes)
    else:
        labelled = len(set(zip(data.labelled.case_ids, data.labelled.slice_index.tolist(), strict=True)))
    return trial_identity(spec, model=method.model_name, alpha=method.alpha, unlabelled_slices=unlabelled,
                          dataset_fingerprint=data.data_fingerprint, labelled_slices=labelled)


def spec_identity(spec: TrialSpec) -> dict[str, Any]:
    """The identity of a trial from its spec alone (a failed trial may have built nothing)."""
    cfg, pool = spec.method, spec.protocol.unlabelled_slices
    return trial_identity(spec, model=str(getattr(cfg, "model", "unet")),
                          alpha=float(getattr(cfg, "alpha", float("nan"))),
                          unlabelled_slices=pool if pool is not None else -1,
                          dataset_fingerprint=spec.data.fingerprint or "")


def image_keys(slices: SliceSet) -> list[tuple[str, int, str]]:
    """The IMAGE_KEY (case_id, slice_index, patch) of each sample of ``slices``."""
    return [(slices.case_ids[i], int(slices.slice_index[i]), slices.patch[i]) for i in range(len(slices))]


def image_rows(ident: dict[str, Any], slices: SliceSet, prob: np.ndarray) -> pd.DataFrame:
    """The per-image results table for the test set."""
    return rows.image_rows(ident, image_keys(slices), prob, slices.labels)


def class_rows(ident: dict[str, Any], slices: SliceSet, prob: np.ndarray, class_names: tuple[str, ...],
               case_records: list[dict[str, Any]]) -> pd.DataFrame | None:
    """The classes table of a C > 2 task (per image and per case, each foreground class); None when binary."""
    if prob.ndim != slices.labels.ndim + 1:
        return None
    records = rows.image_class_records(image_keys(slices), prob, slices.labels, class_names)
    return rows.class_rows(ident, records + case_records)


def trial_row(spec: TrialSpec, ident: dict[str, Any], method: Method, state: TrainState,
              run: dict[str, Any], times: dict[str, str]) -> dict[str, Any]:
    """The one-row per-trial table of a completed trial."""
    losses = rows.final_losses(state.history)
    last = state.history[-1]
    result = {
        "stream": spec.train.stream,
        "budget": spec.train.budget,
        "spec_json": spec.model_dump_json(),
        "params": method.inference_parameters(),
        "train_time_s": state.train_time_s,
        "epochs": state.epoch,
        "resumed_from_epoch": state.resumed_from_epoch,
        "optimizer_steps": state.step,
        "labelled_presentations": state.labelled_presentations,
        "final_loss": losses.get("loss", float("nan")),
        "final_losses_json": json.dumps(losses, sort_keys=True),
        "best_val_iou": max(h["val_iou"] for h in state.history),
        "final_val_iou": last["val_iou"],
        "code_version": code_version(),
        "torch_version": torch.__version__,
    }
    return rows.completed_trial_row(ident, result, run, times)


def failed_trial_row(spec: TrialSpec, error: BaseException, started: str | None = None) -> dict[str, Any]:
    """The per-trial row of a trial that failed for good (bad data, non-finite loss, ...)."""
    return rows.failed_trial_row(spec_identity(spec), error, stream=spec.train.stream, budget=spec.train.budget,
                                 spec_json=spec.model_dump_json(),
                                 code_version=code_version(), torch_version=torch.__version__,
                                 started_at=started or utc_now(), finished_at=utc_now())


def pruned_trial_row(spec: TrialSpec, reason: str, epochs: int, train_time_s: float,
                     started: str | None = None) -> dict[str, Any]:
    """The per-trial row of a search run a scheduler stopped after ``epochs`` epochs."""
    return rows.pruned_trial_row(spec_identity(spec), reason, stream=spec.train.stream, budget=spec.train.budget,
                                 spec_json=spec.model_dump_json(), epochs=epochs, train_time_s=train_time_s,
                                 code_version=code_version(), torch_version=torch.__version__,
                                 started_at=started or utc_now(), finished_at=utc_now())


def all_fold_splits(spec: TrialSpec, data: TrialData) -> dict[str, dict[str, list[str]]]:
    """Every fold's split of this dataset and protocol, as stored in ``splits/<key>.json``."""
    return {str(fold): splits for fold, splits in make_all_splits(data.cases, spec.protocol, data.lists).items()}


def _device_name(device: torch.device) -> str:
    return str(device) if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})"


@dataclass
class TestTables:
    """What testing a trial gives, 2D or 3D alike: the tables the rows are built from."""

    images: pd.DataFrame
    cases: pd.DataFrame | None
    classes: pd.DataFrame | None
    predictions: dict[str, np.ndarray] | None
    decoders: list[dict[str, Any]] | None
    infer_time_s: float


def _test_slices(spec: TrialSpec, ensemble: list[Method], method: Method, data: TrialData, ident: dict[str, Any],
                 device: torch.device) -> TestTables:
    """A 2D trial's test: the ensemble's probability of every test slice."""
    prob, decoders = predict(ensemble, data.test.images, device, labels=data.test.labels)
    check_probabilities(prob, data.test, "test")
    cases, case_classes = case_tables(ident, data.test, prob, data.geometry, spec.data.crop_size,
                                      spec.train.nsd_tolerance_mm, data.class_names)
    return TestTables(
        images=image_rows(ident, data.test, prob), cases=cases,
        classes=class_rows(ident, data.test, prob, data.class_names, case_classes),
        predictions=prediction_maps(data.test, prob, spec.train.prediction_maps), decoders=decoders,
        infer_time_s=time_inference(method, data.test.images, device),
    )


def _test_volumes(spec: TrialSpec, ensemble: list[Method], method: Method, data: TrialData, ident: dict[str, Any],
                  device: torch.device) -> TestTables:
    """A 3D trial's test: whole test volumes by sliding-window inference (what each table
    holds: :mod:`mismatch.trial.volumes`)."""
    probs, decoders = predict_test_volumes(ensemble, data.test, data.window, device)
    cases, case_classes = volume_case_tables(ident, data.test, probs, spec.train.nsd_tolerance_mm, data.class_names)
    return TestTables(
        images=volume_image_rows(ident, data.test, probs, spec.data.min_foreground), cases=cases,
        classes=volume_class_rows(ident, data.test, probs, spec.data.min_foreground, data.class_names, case_classes),
        predictions=volume_prediction_maps(data.test, probs, spec.data.min_foreground, spec.train.prediction_maps),
        decoders=decoders, infer_time_s=time_volume_inference(method, data.test, data.window, device),
    )


def evaluate_trial(spec: TrialSpec, method: Method, data: TrialData, state: TrainState, device: torch.device,
                   started: str) -> TrialResult:
    """Test the trained trial (snapshot ensemble) and build every table's rows: the one
    evaluation of every trial, alone or fused, 2D or 3D."""
    ensemble = snapshot_methods(method, state)
    ident = identity_columns(spec, method, data)
    test = (_test_volumes if data.spatial_dims == 3 else _test_slices)(spec, ensemble, method, data, ident, device)
    run = {
        "splits_json": json.dumps(data.splits, sort_keys=True),
        "infer_time_per_image_s": test.infer_time_s,
        "peak_memory_mb": peak_memory_mb(device),
        "n_test_images": len(test.images),
        "device": _device_name(device),
    }
    return TrialResult(  # arguments run in order: the trial row (finished_at) after every table
        images=test.images,
        epochs=rows.epoch_rows(ident, state.history),
        predictions=test.predictions,
        splits=all_fold_splits(spec, data),
        decoders=rows.decoder_rows(ident, method.decoder_names(), test.decoders),
        cases=test.cases,
        classes=test.classes,
        trial=trial_row(spec, ident, method, state, run, {"started_at": started, "finished_at": utc_now()}),
    )
