"""A trial's batches: the stream protocols (the paper's one shuffled stream, the field's two
streams), 3D patches, and a 2D trial's slices held on the device.

Every order depends only on (seed, epoch), so an interrupted trial resumes the same stream and
every member of a fused group sees the batches it would see alone (docs/methods.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Literal

import numpy as np
import torch

from mismatch.config import TrainSpec
from mismatch.data import TrialData
from mismatch.data.volumes3d import sample_patches
from mismatch.methods import Batch

__all__ = [
    "DeviceSlices", "device_slices", "epoch_batches", "stream_batches", "steps_per_epoch", "two_stream_batches",
    "two_stream_steps",
]

Budget = Literal["paper", "steps"]
# Sub-stream of default_rng([seed, epoch, LABELLED_STREAM, pass]): the labelled cycle's passes.
LABELLED_STREAM = 1
# Sub-stream of default_rng([seed, epoch, PATCH_STREAM]): a 3D epoch's patch positions.
PATCH_STREAM = 2


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
