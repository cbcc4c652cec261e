"""THE training loop: one trial, any method, the paper's streaming protocol.

``run_trial(spec)`` prepares the trial's slices, trains the method named by the spec with
labelled and unlabelled slices in one shuffled stream per epoch, validates every epoch,
ensembles the last K epoch snapshots at test time and returns the rows of the results schema
(docs/results-schema.md). It does not import Ray: the study runner calls it inside a Ray Tune
trial through the ``on_epoch_end`` hook and the ``checkpoint_dir`` argument.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from mismatch import metrics
from mismatch.config import SCHEMA_VERSION, TrialSpec
from mismatch.data import SliceSet, TrialData, load_trial_data
from mismatch.data.splits import make_all_splits
from mismatch.methods import Batch, Method, build_method
from mismatch.optim import Optimization
from mismatch.runtime import code_version, peak_memory_mb, seed_everything, select_device

EVAL_BATCH = 16
TIMED_IMAGES = 20


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the steps and the loss term.

    Losses are checked every ``train.check_every`` steps (and at the end of each epoch), so
    the message names the range of steps in which the value appeared (0-based, counted over
    the whole trial).
    """


@dataclass
class EpochReport:
    """What the loop reports after each epoch (the study runner forwards it to Ray Tune)."""

    epoch: int
    losses: dict[str, float]
    val: dict[str, float]
    time_s: float


@dataclass
class TrainState:
    """Everything needed to continue training after an interruption."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, torch.Tensor]] = field(default_factory=list)
    train_time_s: float = 0.0
    resumed_from_epoch: int = 0


@dataclass
class TrialResult:
    """The rows one trial produces (see docs/results-schema.md)."""

    trial: dict[str, Any]
    images: pd.DataFrame
    epochs: pd.DataFrame
    predictions: dict[str, np.ndarray] | None = None
    splits: dict[str, dict[str, list[str]]] | None = None
    decoders: pd.DataFrame | None = None


def identity_columns(spec: TrialSpec, method: Method, data: TrialData) -> dict[str, Any]:
    """The columns that identify a trial in every results table."""
    return {
        "schema_version": SCHEMA_VERSION,
        "study": spec.study,
        "trial_id": spec.trial_id(),
        "method": spec.method.name,
        "model": method.model_name,
        "alpha": method.alpha,
        "labelled_slices": spec.protocol.labelled_slices,
        "unlabelled_slices": len(data.unlabelled.images) if method.uses_unlabelled else 0,
        "fold": spec.protocol.fold,
        "seed": spec.train.seed,
        "dataset_fingerprint": data.data_fingerprint,
    }


def stream_batches(
    data: TrialData, epoch: int, seed: int, batch_size: int, use_unlabelled: bool = True
) -> Iterator[Batch]:
    """The streaming protocol: every labelled and unlabelled slice once, in one shuffled order.

    The order depends only on (seed, epoch), so an interrupted trial resumes the same stream.
    Supervised-only methods (``use_unlabelled=False``) stream the labelled slices alone.
    """
    n_lab = len(data.labelled.images)
    n_unl = len(data.unlabelled.images) if use_unlabelled else 0
    order = np.random.default_rng([seed, epoch]).permutation(n_lab + n_unl)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        lab_idx, unl_idx = idx[idx < n_lab], idx[idx >= n_lab] - n_lab
        images = np.concatenate([data.labelled.images[lab_idx], data.unlabelled.images[unl_idx]])
        labels = np.concatenate([data.labelled.labels[lab_idx], np.zeros_like(data.unlabelled.labels[unl_idx])])
        mask = np.arange(len(idx)) < len(lab_idx)
        yield Batch(
            image=torch.from_numpy(images),
            label=torch.from_numpy(labels[:, None].astype(np.float32)),  # (B, 1, H, W)
            labelled=torch.from_numpy(mask),
            n_labelled=len(lab_idx),
        )


def steps_per_epoch(data: TrialData, batch_size: int, use_unlabelled: bool = True) -> int:
    """Optimiser steps in one epoch of :func:`stream_batches`."""
    n = len(data.labelled.images) + (len(data.unlabelled.images) if use_unlabelled else 0)
    return math.ceil(n / batch_size)


def _check_finite(sums: dict[str, torch.Tensor], first: int, last: int, epoch: int) -> list[float]:
    """Host values of the running loss sums; raises if one is NaN or infinite.

    One device sync per call. A sum that was finite at the previous check and is not now
    got its non-finite value in steps ``first``..``last``. A term other than the total
    ``loss`` is named when one is at fault.
    """
    values = torch.stack(list(sums.values())).tolist()
    bad = [(name, v) for name, v in zip(sums, values) if not math.isfinite(v)]
    if bad:
        name, value = next(((n, v) for n, v in bad if n != "loss"), bad[0])
        steps = f"step {first}" if first == last else f"steps {first}-{last}"
        raise NonFiniteLossError(f"loss '{name}' is {value} in {steps} (epoch {epoch})")
    return values


def train_epoch(
    method: Method, optim: Optimization, data: TrialData, state: TrainState, spec: TrialSpec, device: torch.device
) -> dict[str, float]:
    """One pass over the stream; returns the mean of every loss term over the steps it appeared in.

    Loss terms are summed on the device (float64, so the means equal a host-side sum's) and
    read back every ``check_every`` steps for the non-finite check and once at the end.
    """
    method.train()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    unchecked = state.step  # first step whose losses no check has seen
    stream = stream_batches(data, state.epoch, spec.train.seed, spec.train.batch_size, method.uses_unlabelled)
    for index, batch in enumerate(stream, start=1):
        with optim.autocast():
            losses = method.training_step(batch.to(device), state.epoch)
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.detach().double()
            counts[name] = counts.get(name, 0) + 1
        if index % spec.train.check_every == 0:
            _check_finite(sums, unchecked, state.step, state.epoch)
            unchecked = state.step + 1
        optim.step(losses["loss"])
        method.after_step()
        state.step += 1
    values = _check_finite(sums, unchecked, state.step - 1, state.epoch)
    return {name: value / counts[name] for name, value in zip(sums, values)}


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
    """Mean foreground probability of several snapshots, (N, H, W) float32.

    With ``labels`` and a several-decoder method, also each decoder's calibration summed over
    the images (from the same forward passes): reliability-bin sums and foreground confidence.
    """
    out = np.empty((len(images), *images.shape[2:]), dtype=np.float32)
    for m in methods:
        m.eval()
    totals: list[dict[str, Any]] | None = None
    for start in range(0, len(images), EVAL_BATCH):
        x = torch.from_numpy(images[start : start + EVAL_BATCH]).to(device)
        prob, decoders = _batch_probabilities(methods, x)
        out[start : start + len(x)] = prob[:, 0].float().cpu().numpy()
        if labels is not None and decoders is not None:
            y = labels[start : start + len(x)]
            batch = [decoder_calibration(d[:, 0].float().cpu().numpy(), y) for d in decoders]
            totals = batch if totals is None else [_add(a, b) for a, b in zip(totals, batch)]
    return out, totals


def decoder_calibration(prob: np.ndarray, label: np.ndarray) -> dict[str, Any]:
    """Sums that aggregate exactly: reliability bins and the probability on true foreground."""
    bins = metrics.reliability_bins(prob, label)
    fg = label.astype(bool)
    return {**bins, "fg_prob_sum": float(prob[fg].sum()), "fg_pixels": int(fg.sum())}


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: a[k] + b[k] for k in a}


def evaluate(methods: list[Method], slices: SliceSet, device: torch.device) -> list[dict[str, Any]]:
    """Per-image metric rows for a slice set."""
    prob, _ = predict(methods, slices.images, device)
    return [metrics.image_metrics(prob[i], slices.labels[i]) for i in range(len(prob))]


def validate(method: Method, data: TrialData, device: torch.device) -> dict[str, float]:
    """Mean validation IoU, Dice and two-class mean Dice of the current weights."""
    rows = pd.DataFrame(evaluate([method], data.validation, device))
    return {f"val_{k}": float(rows[k].mean()) for k in ("iou", "dice", "mean_dice_2class")}


def build_optimization(method: Method, spec: TrialSpec, data: TrialData, device: torch.device) -> Optimization:
    """The method's optimisers and schedules (:meth:`Method.configure_optimizers`), with the
    spec's gradient clipping and precision."""
    steps = steps_per_epoch(data, spec.train.batch_size, method.uses_unlabelled)
    return Optimization(method.configure_optimizers(spec.train, steps), spec.train, device)


def _snapshot_epochs(spec: TrialSpec) -> int:
    return 1 if spec.train.snapshot == "final" else min(spec.train.snapshot_k, spec.train.epochs)


def save_checkpoint(path: Path, method: Method, optim: Optimization, state: TrainState) -> None:
    """Write everything a retry needs, atomically (temp file + rename): weights, optimiser,
    schedule and gradient-scaler state, the loop's state and the RNG."""
    payload = {
        "method": method.state_dict(),
        "optimization": optim.state_dict(),
        "state": {k: v for k, v in vars(state).items() if k != "snapshots"},
        "snapshots": state.snapshots,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, method: Method, optim: Optimization) -> TrainState:
    """Restore a checkpoint written by :func:`save_checkpoint` (weights only, no pickled code)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    method.load_state_dict(payload["method"])
    optim.load_state_dict(payload["optimization"])
    torch.set_rng_state(payload["torch_rng"])
    return TrainState(**payload["state"], snapshots=payload["snapshots"])


def fit(
    spec: TrialSpec,
    method: Method,
    data: TrialData,
    device: torch.device,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> TrainState:
    """Train for ``spec.train.epochs`` epochs, keeping the last K snapshots' weights."""
    optim = build_optimization(method, spec, data, device)
    ckpt = checkpoint_dir / "trial.pt" if checkpoint_dir else None
    state = load_checkpoint(ckpt, method, optim) if ckpt and ckpt.exists() else TrainState()
    state.resumed_from_epoch = state.epoch
    keep_from = spec.train.epochs - _snapshot_epochs(spec)
    while state.epoch < spec.train.epochs:
        start = time.perf_counter()
        losses = train_epoch(method, optim, data, state, spec, device)
        val = validate(method, data, device)
        elapsed = time.perf_counter() - start
        state.train_time_s += elapsed
        state.history.append({"epoch": state.epoch, "time_s": elapsed, **{f"loss_{k}": v for k, v in losses.items()}, **val})
        if state.epoch >= keep_from:
            state.snapshots.append({k: v.detach().cpu().clone() for k, v in method.state_dict().items()})
        report = EpochReport(state.epoch, losses, val, elapsed)
        state.epoch += 1
        if ckpt:
            save_checkpoint(ckpt, method, optim, state)
        if on_epoch_end:
            on_epoch_end(report)
    return state


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
    """A few test images with label and probability, for the report's visual results."""
    if n == 0 or len(prob) == 0:
        return None
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


def image_rows(ident: dict[str, Any], slices: SliceSet, prob: np.ndarray) -> pd.DataFrame:
    """The per-image results table for the test set."""
    rows = []
    for i in range(len(prob)):
        rows.append(
            {
                **ident,
                "case_id": slices.case_ids[i],
                "slice_index": int(slices.slice_index[i]),
                "patch": slices.patch[i],
                **metrics.image_metrics(prob[i], slices.labels[i]),
            }
        )
    return pd.DataFrame(rows)


def trial_row(
    spec: TrialSpec, ident: dict[str, Any], method: Method, state: TrainState, extra: dict[str, Any]
) -> dict[str, Any]:
    """The one-row per-trial table of a completed trial."""
    last = state.history[-1]
    losses = {k[len("loss_") :]: v for k, v in last.items() if k.startswith("loss_")}
    return {
        **ident,
        "status": "completed",
        "error": None,
        "spec_json": spec.model_dump_json(),
        "params": method.inference_parameters(),
        "train_time_s": state.train_time_s,
        "epochs": state.epoch,
        "resumed_from_epoch": state.resumed_from_epoch,
        "final_loss": losses.get("loss", float("nan")),
        "final_losses_json": json.dumps(losses, sort_keys=True),
        "best_val_iou": max(h["val_iou"] for h in state.history),
        "final_val_iou": last["val_iou"],
        "code_version": code_version(),
        "torch_version": torch.__version__,
        **extra,
    }


def all_fold_splits(spec: TrialSpec, data: TrialData) -> dict[str, dict[str, list[str]]]:
    """Every fold's split of this dataset and protocol, as stored in ``splits/<key>.json``."""
    cases = data.cases
    return {str(fold): splits for fold, splits in make_all_splits(cases, spec.protocol).items()}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def run_trial(
    spec: TrialSpec,
    *,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
    checkpoint_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> TrialResult:
    """Train and evaluate one trial; deterministic on CPU (the same spec gives the same rows)."""
    started = _now()
    device = select_device(spec.train.device)
    seed_everything(spec.train.seed, deterministic=spec.train.deterministic, device=device)
    data = load_trial_data(spec.data, spec.protocol, cache_dir=cache_dir)
    method = build_method(spec.method, data.in_channels).to(device)
    state = fit(spec, method, data, device, on_epoch_end, checkpoint_dir)
    ensemble = snapshot_methods(method, state)
    prob, decoders = predict(ensemble, data.test.images, device, labels=data.test.labels)
    ident = identity_columns(spec, method, data)
    splits = all_fold_splits(spec, data)
    extra = {
        "splits_json": json.dumps(data.splits, sort_keys=True),
        "infer_time_per_image_s": time_inference(method, data.test.images, device),
        "peak_memory_mb": peak_memory_mb(device),
        "n_test_images": len(prob),
        "device": str(device) if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})",
        "started_at": started,
        "finished_at": _now(),
    }
    epochs = pd.DataFrame([{**ident, **h} for h in state.history])
    return TrialResult(
        trial=trial_row(spec, ident, method, state, extra),
        images=image_rows(ident, data.test, prob),
        epochs=epochs,
        predictions=prediction_maps(data.test, prob, spec.train.prediction_maps),
        splits=splits,
        decoders=decoder_rows(ident, method.decoder_names(), decoders),
    )


def decoder_rows(ident: dict[str, Any], names: list[str], totals: list[dict[str, Any]] | None) -> pd.DataFrame | None:
    """One row per decoder: its reliability-bin sums over the test set, pooled ECE and mean
    foreground probability (how MisMatch's decoders shift confidence, the paper's Fig. 8)."""
    if not totals:
        return None
    rows = []
    for index, (name, t) in enumerate(zip(names, totals)):
        row = {**ident, "decoder": index, "decoder_name": name,
               "ece": metrics.ece_from_bins(t["count"], t["conf_sum"], t["correct_sum"]),
               "mean_fg_prob": t["fg_prob_sum"] / t["fg_pixels"] if t["fg_pixels"] else float("nan")}
        for k in range(metrics.N_BINS):
            row[f"bin{k}_count"] = int(t["count"][k])
            row[f"bin{k}_conf_sum"] = float(t["conf_sum"][k])
            row[f"bin{k}_correct_sum"] = int(t["correct_sum"][k])
        rows.append(row)
    return pd.DataFrame(rows)


def failed_trial_row(spec: TrialSpec, error: BaseException, started: str | None = None) -> dict[str, Any]:
    """The per-trial row of a trial that failed for good (bad data, non-finite loss, ...)."""
    cfg = spec.method
    return {
        "schema_version": SCHEMA_VERSION,
        "study": spec.study,
        "trial_id": spec.trial_id(),
        "method": cfg.name,
        "model": str(getattr(cfg, "model", "unet")),
        "alpha": float(getattr(cfg, "alpha", float("nan"))),
        "labelled_slices": spec.protocol.labelled_slices,
        "unlabelled_slices": spec.protocol.unlabelled_slices if spec.protocol.unlabelled_slices is not None else -1,
        "fold": spec.protocol.fold,
        "seed": spec.train.seed,
        "dataset_fingerprint": spec.data.fingerprint or "",
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "spec_json": spec.model_dump_json(),
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "started_at": started or _now(),
        "finished_at": _now(),
    }
