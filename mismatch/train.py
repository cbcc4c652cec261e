"""THE training loop: one trial, any method, under the spec's stream protocol.

``run_trial(spec)`` prepares the trial's slices, trains the method named by the spec with
labelled and unlabelled slices (the paper's one shuffled stream per epoch, or two streams:
see :func:`epoch_batches` and docs/methods.md), validates every epoch,
and hands the trained method to :func:`mismatch.evaluate.evaluate_trial`, which tests the
snapshot ensemble and returns the rows of the results schema (docs/results-schema.md). It
does not import Ray: the study runner calls it inside a Ray Tune trial through the
``on_epoch_end`` hook and the ``checkpoint_dir`` argument.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mismatch.config import TrainSpec, TrialSpec
from mismatch.data import TrialData, load_trial_data
from mismatch.data.atomic import disk_full_names
from mismatch.data.volumes3d import sample_patches
from mismatch.evaluate import (
    NonFiniteProbabilityError,
    TrialResult,
    evaluate_trial,
    failed_trial_row,
    utc_now,
    validate,
)
from mismatch.evaluate_volumes import NonFiniteVolumeError
from mismatch.methods import Batch, Method, build_method
from mismatch.optim import Optimization
from mismatch.runtime import reset_peak_memory, seed_everything, select_device

__all__ = [
    "NON_FINITE_ERRORS", "EpochReport", "NonFiniteLossError", "NonFiniteProbabilityError", "NonFiniteVolumeError",
    "TrainState", "TrialResult", "build_trial_method", "epoch_batches", "failed_trial_row", "fit", "run_trial", "snapshot_epochs",
    "steps_per_epoch", "stream_batches", "train_epoch", "two_stream_batches",
]

Budget = Literal["paper", "steps"]
# Sub-stream of default_rng([seed, epoch, LABELLED_STREAM, pass]): the labelled cycle's passes.
LABELLED_STREAM = 1
# Sub-stream of default_rng([seed, epoch, PATCH_STREAM]): a 3D epoch's patch positions.
PATCH_STREAM = 2


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the steps and the loss term.

    Losses are checked every ``train.check_every`` steps (and at the end of each epoch), so
    the message names the range of steps in which the value appeared (0-based, counted over
    the whole trial).
    """


NON_FINITE_ERRORS: tuple[type[FloatingPointError], ...] = (NonFiniteLossError, NonFiniteProbabilityError,
                                                           NonFiniteVolumeError)
"""Errors that fail a trial for good (a retry gives the same NaN): recorded as failed rows."""


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
    step: int = 0  # optimiser steps taken so far (the trial row's ``optimizer_steps``)
    labelled_presentations: int = 0  # labelled slices seen by those steps (with repeats)
    history: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, torch.Tensor]] = field(default_factory=list)
    train_time_s: float = 0.0
    resumed_from_epoch: int = 0


def _labelled_cycle(n_lab: int, count: int, seed: int, epoch: int) -> np.ndarray:
    """``count`` labelled indices: passes over ``range(n_lab)``, each reshuffled.

    Pass ``p`` of epoch ``epoch`` is ``default_rng([seed, epoch, LABELLED_STREAM, p])``'s
    permutation, so the cycle restarts every epoch and a resumed trial sees the same order.
    """
    passes = math.ceil(count / n_lab) if count else 0
    orders = [np.random.default_rng([seed, epoch, LABELLED_STREAM, p]).permutation(n_lab) for p in range(passes)]
    return np.concatenate(orders)[:count] if orders else np.zeros(0, dtype=np.int64)


BatchMaker = Callable[[np.ndarray, np.ndarray], Batch]


def _as_batch(lab_images: np.ndarray, lab_labels: np.ndarray, unl_images: np.ndarray) -> Batch:
    """Labelled samples first, then the unlabelled ones (their labels zeros)."""
    images = np.concatenate([lab_images, unl_images])
    labels = np.concatenate([lab_labels, np.zeros((len(unl_images), *lab_labels.shape[1:]), dtype=lab_labels.dtype)])
    mask = np.arange(len(images)) < len(lab_images)
    return Batch(
        image=torch.from_numpy(images),
        label=torch.from_numpy(labels[:, None].astype(np.float32)),  # (B, 1, *spatial)
        labelled=torch.from_numpy(mask),
        n_labelled=len(lab_images),
    )


def _batch(data: TrialData, lab_idx: np.ndarray, unl_idx: np.ndarray) -> Batch:
    """The labelled slices ``lab_idx`` first, then the unlabelled ``unl_idx`` (labels zeroed)."""
    return _as_batch(data.labelled.images[lab_idx], data.labelled.labels[lab_idx], data.unlabelled.images[unl_idx])


class DeviceSlices:
    """A 2D trial's labelled and unlabelled slices as tensors, for a GPU hot path without a
    host-side batch per step: on the device when they fit (a batch is then indexed there),
    else in pinned host memory (a batch is gathered there and copied without blocking).

    A batch holds exactly the values of :func:`_batch`'s, so trials give the same rows either way
    (``train.data_on_device``; tests/test_device_slices.py compares them).
    """

    def __init__(self, data: TrialData, device: torch.device, on_device: bool) -> None:
        self.device, self.on_device = device, on_device
        pin = device.type == "cuda" and not on_device

        def put(array: np.ndarray) -> torch.Tensor:
            tensor = torch.from_numpy(np.ascontiguousarray(array))
            return tensor.to(device) if on_device else (tensor.pin_memory() if pin else tensor)

        self.lab_images, self.lab_labels = put(data.labelled.images), put(data.labelled.labels)
        self.unl_images = put(data.unlabelled.images)
        self.home = device if on_device else torch.device("cpu")

    def _index(self, idx: np.ndarray) -> torch.Tensor:
        # A pinned index copies without blocking the host (no synchronisation per step).
        index = torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64))
        if self.home.type == "cuda":
            return index.pin_memory().to(self.home, non_blocking=True)
        return index

    def batch(self, lab_idx: np.ndarray, unl_idx: np.ndarray) -> Batch:
        """:func:`_batch` of these indices, built on the device (or copied to it without blocking)."""
        lab, unl = self._index(lab_idx), self._index(unl_idx)
        images = torch.cat([self.lab_images.index_select(0, lab), self.unl_images.index_select(0, unl)])
        labels = self.lab_labels.index_select(0, lab)
        labels = torch.cat([labels, labels.new_zeros((len(unl_idx), *labels.shape[1:]))])[:, None].float()
        mask = torch.arange(len(images), device=self.home) < len(lab_idx)
        if not self.on_device and self.device.type == "cuda":
            images, labels, mask = (t.pin_memory().to(self.device, non_blocking=True) for t in (images, labels, mask))
        return Batch(image=images, label=labels, labelled=mask, n_labelled=len(lab_idx))


#: Largest share of the device's free memory a trial's slices may take to stay resident there.
RESIDENT_SHARE = 0.25


def device_slices(data: TrialData, device: torch.device, mode: str = "auto") -> DeviceSlices | None:
    """The slices of a 2D trial for ``train.data_on_device``: ``auto`` keeps them on a CUDA device
    when they take at most :data:`RESIDENT_SHARE` of its free memory (else pinned host memory),
    and leaves CPU trials to the NumPy path; ``on`` puts them on the device (on a CPU: as tensors,
    which tests use); ``off`` (and 3D trials, which sample patches on the host) is the NumPy path."""
    if data.spatial_dims == 3 or mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "on":
        return DeviceSlices(data, device, on_device=True)
    need = sum(a.nbytes for a in (data.labelled.images, data.labelled.labels, data.unlabelled.images))
    free, _ = torch.cuda.mem_get_info(device)
    return DeviceSlices(data, device, on_device=need <= RESIDENT_SHARE * free)


def _patch_batch(data: TrialData, rng: np.random.Generator, lab_idx: np.ndarray, unl_idx: np.ndarray) -> Batch:
    """3D: one patch of each labelled volume ``lab_idx`` (centred on foreground with the
    spec's probability), then one uniform patch of each unlabelled volume ``unl_idx``."""
    window = data.window
    assert window is not None
    lab_images, lab_labels = sample_patches(data.labelled, lab_idx, window.size, rng, window.foreground)
    unl_images, _ = sample_patches(data.unlabelled, unl_idx, window.size, rng)
    return _as_batch(lab_images, lab_labels, unl_images)


def _batch_maker(data: TrialData, seed: int, epoch: int, slices: DeviceSlices | None = None) -> BatchMaker:
    """What turns a step's sample indices into a batch: the slices themselves (2D), or one
    patch per volume (3D), drawn from ``default_rng([seed, epoch, PATCH_STREAM])`` in stream
    order, so a trial resumed at an epoch boundary sees the same patches."""
    if slices is not None:
        return slices.batch
    if data.spatial_dims != 3:
        return partial(_batch, data)
    return partial(_patch_batch, data, np.random.default_rng([seed, epoch, PATCH_STREAM]))


def stream_batches(
    data: TrialData, epoch: int, seed: int, batch_size: int, use_unlabelled: bool = True, budget: Budget = "paper",
    slices: DeviceSlices | None = None,
) -> Iterator[Batch]:
    """The streaming protocol: every labelled and unlabelled slice once, in one shuffled order.

    The order depends only on (seed, epoch), so an interrupted trial resumes the same stream.
    Supervised-only methods (``use_unlabelled=False``) stream the labelled slices alone
    (``budget="paper"``) or the labelled slices cycled, each pass reshuffled, up to the
    length of the semi-supervised stream (``budget="steps"``).
    """
    n_lab = len(data.labelled.images)
    n_unl = len(data.unlabelled.images)
    make = _batch_maker(data, seed, epoch, slices)
    if not use_unlabelled and budget == "steps":
        order = _labelled_cycle(n_lab, n_lab + n_unl, seed, epoch)
        for start in range(0, len(order), batch_size):
            yield make(order[start : start + batch_size], np.zeros(0, dtype=np.int64))
        return
    n_unl = n_unl if use_unlabelled else 0
    order = np.random.default_rng([seed, epoch]).permutation(n_lab + n_unl)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield make(idx[idx < n_lab], idx[idx >= n_lab] - n_lab)


def two_stream_batches(
    data: TrialData, epoch: int, seed: int, batch_size: int, use_unlabelled: bool = True,
    slices: DeviceSlices | None = None,
) -> Iterator[Batch]:
    """The two-stream protocol: every step ``batch_size`` labelled slices (cycled, reshuffled
    each pass) and, for semi-supervised methods, ``batch_size`` unlabelled slices.

    An epoch is one shuffled pass over the unlabelled pool (``default_rng([seed, epoch])``);
    supervised methods take the same number of steps with the labelled batch alone, so every
    method takes the same optimiser steps and sees the same labelled presentations.
    """
    n_steps = two_stream_steps(data, batch_size)
    labelled = _labelled_cycle(len(data.labelled.images), n_steps * batch_size, seed, epoch)
    unlabelled = np.random.default_rng([seed, epoch]).permutation(len(data.unlabelled.images))
    make = _batch_maker(data, seed, epoch, slices)
    for step in range(n_steps):
        lab_idx = labelled[step * batch_size : (step + 1) * batch_size]
        unl_idx = unlabelled[step * batch_size : (step + 1) * batch_size] if use_unlabelled else unlabelled[:0]
        yield make(lab_idx, unl_idx)


def two_stream_steps(data: TrialData, batch_size: int) -> int:
    """Steps in one two-stream epoch: one pass over the unlabelled pool (over the labelled
    slices when the pool is empty)."""
    n = len(data.unlabelled.images) or len(data.labelled.images)
    return math.ceil(n / batch_size)


def epoch_batches(data: TrialData, epoch: int, train: TrainSpec, use_unlabelled: bool = True,
                  slices: DeviceSlices | None = None) -> Iterator[Batch]:
    """One epoch's batches under the spec's stream protocol (``train.stream``, ``train.budget``),
    built from ``slices`` (:func:`device_slices`) when given."""
    if train.stream == "two-stream":
        return two_stream_batches(data, epoch, train.seed, train.batch_size, use_unlabelled, slices)
    return stream_batches(data, epoch, train.seed, train.batch_size, use_unlabelled, train.budget, slices)


def steps_per_epoch(data: TrialData, train: TrainSpec | int, use_unlabelled: bool = True) -> int:
    """Optimiser steps in one epoch of :func:`epoch_batches` (an int ``train`` is a batch size
    under the paper's protocol, the signature before stream protocols existed)."""
    if isinstance(train, int):
        train = TrainSpec(batch_size=train)
    if train.stream == "two-stream":
        return two_stream_steps(data, train.batch_size)
    n_lab, n_unl = len(data.labelled.images), len(data.unlabelled.images)
    n = n_lab + n_unl if use_unlabelled or train.budget == "steps" else n_lab
    return math.ceil(n / train.batch_size)


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
    method: Method, optim: Optimization, data: TrialData, state: TrainState, spec: TrialSpec, device: torch.device,
    slices: DeviceSlices | None = None,
) -> dict[str, float]:
    """One pass over the stream; returns the mean of every loss term over the steps it appeared in.

    Loss terms are summed on the device (float64, so the means equal a host-side sum's) and
    read back every ``check_every`` steps for the non-finite check and once at the end.
    """
    method.train()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    unchecked = state.step  # first step whose losses no check has seen
    stream = epoch_batches(data, state.epoch, spec.train, method.uses_unlabelled, slices)
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
        state.labelled_presentations += batch.n_labelled or 0
    values = _check_finite(sums, unchecked, state.step - 1, state.epoch)
    return {name: value / counts[name] for name, value in zip(sums, values)}


def build_optimization(method: Method, spec: TrialSpec, data: TrialData, device: torch.device) -> Optimization:
    """The method's optimisers and schedules (:meth:`Method.configure_optimizers`), with the
    spec's gradient clipping and precision."""
    steps = steps_per_epoch(data, spec.train, method.uses_unlabelled)
    return Optimization(method.configure_optimizers(spec.train, steps), spec.train, device)


def snapshot_epochs(spec: TrialSpec) -> int:
    """How many of the last epochs keep a snapshot for the test-time ensemble."""
    return 1 if spec.train.snapshot == "final" else min(spec.train.snapshot_k, spec.train.epochs)


def save_checkpoint(path: Path, method: Method, optim: Optimization, state: TrainState) -> None:
    """Write everything a retry needs, atomically (temp file + rename): weights, optimiser,
    schedule and gradient-scaler state, the loop's state and the RNG. A failed write (a full
    disk: :class:`~mismatch.data.atomic.DiskFullError`) removes its temporary file."""
    payload = {
        "method": method.state_dict(),
        "optimization": optim.state_dict(),
        "state": {k: v for k, v in vars(state).items() if k != "snapshots"},
        "snapshots": state.snapshots,
        "torch_rng": torch.get_rng_state(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # in memory: torch reports a full disk as a RuntimeError, a file write as ENOSPC
    tmp = path.with_suffix(".tmp")
    try:
        with disk_full_names(path):  # a full disk: DiskFullError naming the checkpoint
            tmp.write_bytes(buffer.getbuffer())
            tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the previous checkpoint stays intact; no partial trial.tmp
        raise


def load_checkpoint(path: Path, method: Method, optim: Optimization, n_labelled: int = 0) -> TrainState:
    """Restore a checkpoint written by :func:`save_checkpoint` (weights only, no pickled code).

    A checkpoint of the code before the training hooks (one optimiser under ``"optimizer"``,
    the paper's streaming protocol) still resumes: its labelled presentations, which that code
    did not count, are ``epoch x n_labelled`` (every labelled slice once per epoch)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    method.load_state_dict(payload["method"])
    if "optimization" in payload:
        optim.load_state_dict(payload["optimization"])
    else:  # written before the training hooks: one optimiser, constant learning rate
        optim.setups[0].optimizer.load_state_dict(payload["optimizer"])
        payload["state"].setdefault("labelled_presentations", payload["state"]["epoch"] * n_labelled)
    torch.set_rng_state(payload["torch_rng"])
    return TrainState(**payload["state"], snapshots=payload["snapshots"])


def checkpoint_history(path: Path) -> list[dict[str, Any]]:
    """The per-epoch history (``epoch``, ``time_s``, ``loss_*``, ``val_*``) kept in a trial's
    checkpoint file, without building its network: what a paused search run had trained."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    return list(payload["state"]["history"])


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
    slices = device_slices(data, device, spec.train.data_on_device)
    ckpt = checkpoint_dir / "trial.pt" if checkpoint_dir else None
    n_labelled = len(data.labelled.images)
    state = load_checkpoint(ckpt, method, optim, n_labelled) if ckpt and ckpt.exists() else TrainState()
    state.resumed_from_epoch = state.epoch
    keep_from = spec.train.epochs - snapshot_epochs(spec)
    while state.epoch < spec.train.epochs:
        start = time.perf_counter()
        losses = train_epoch(method, optim, data, state, spec, device, slices)
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


def build_trial_method(spec: TrialSpec, data: TrialData) -> Method:
    """The spec's method for the trial's data: its input channels, classes and spatial dims.

    The one builder of a trial's method: :func:`run_trial` and the fused engine
    (:mod:`mismatch.fusion.engine`) both call it, so a fused member gets the network of its
    trial alone (issue 25: a copy without ``num_classes`` and ``spatial_dims`` built fused
    multi-class and 3D trials as binary 2D networks)."""
    return build_method(spec.method, data.in_channels, num_classes=data.num_classes, spatial_dims=data.spatial_dims)


def run_trial(
    spec: TrialSpec,
    *,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
    checkpoint_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> TrialResult:
    """Train and evaluate one trial; deterministic on CPU (the same spec gives the same rows)."""
    started = utc_now()
    device = select_device(spec.train.device)
    reset_peak_memory(device)
    seed_everything(spec.train.seed, deterministic=spec.train.deterministic, device=device)
    data = load_trial_data(spec.data, spec.protocol, cache_dir=cache_dir)
    method = build_trial_method(spec, data).to(device)
    state = fit(spec, method, data, device, on_epoch_end, checkpoint_dir)
    return evaluate_trial(spec, method, data, state, device, started)
