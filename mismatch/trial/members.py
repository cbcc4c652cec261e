"""A trial's parts before its first step: data, method, optimisation, device slices, seed.

:func:`build_member` is the one place a trial is put together, for a trial alone and for every
member of a fused group alike, so a member gets exactly the network, optimiser and batches of
its trial alone (issue 25: a copy without ``num_classes`` and ``spatial_dims`` built fused
multi-class and 3D trials as binary 2D networks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from mismatch.config import TrialSpec
from mismatch.data import TrialData, load_trial_data
from mismatch.methods import Method, build_method
from mismatch.optim import Optimization
from mismatch.runtime import seed_everything
from mismatch.trial.batches import DeviceSlices, device_slices, steps_per_epoch
from mismatch.trial.state import TrainState, utc_now

__all__ = ["Member", "build_member", "build_optimization", "build_trial_method", "snapshot_epochs"]


@dataclass
class Member:
    """One trial of a run of K (K = 1: a trial alone): everything it would have alone."""

    spec: TrialSpec
    data: TrialData
    method: Method
    optim: Optimization
    started: str
    slices: DeviceSlices | None = None
    state: TrainState = field(default_factory=TrainState)
    error: FloatingPointError | None = None
    #: The member's torch RNG state between its steps (a group swaps it in around each step,
    #: so every member draws what it would draw alone); ``None`` for a trial alone.
    rng: torch.Tensor | None = None

    @property
    def steps(self) -> int:
        """Optimiser steps in one of its epochs."""
        return steps_per_epoch(self.data, self.spec.train, self.method.uses_unlabelled)


def build_trial_method(spec: TrialSpec, data: TrialData) -> Method:
    """The spec's method for the trial's data: its input channels, classes and spatial dims."""
    return build_method(spec.method, data.in_channels, num_classes=data.num_classes, spatial_dims=data.spatial_dims)


def build_optimization(method: Method, spec: TrialSpec, data: TrialData, device: torch.device) -> Optimization:
    """The method's optimisers and schedules (:meth:`Method.configure_optimizers`), with the
    spec's gradient clipping and precision."""
    steps = steps_per_epoch(data, spec.train, method.uses_unlabelled)
    return Optimization(method.configure_optimizers(spec.train, steps), spec.train, device)


def snapshot_epochs(spec: TrialSpec) -> int:
    """How many of the last epochs keep a snapshot for the test-time ensemble."""
    return 1 if spec.train.snapshot == "final" else min(spec.train.snapshot_k, spec.train.epochs)


def build_member(spec: TrialSpec, device: torch.device, cache_dir: Path | None = None) -> Member:
    """The trial of ``spec`` ready to train: seeded, its data loaded, its method built on
    ``device`` with its optimisation and (``train.data_on_device``) its slices there."""
    started = utc_now()
    seed_everything(spec.train.seed, deterministic=spec.train.deterministic, device=device)
    data = load_trial_data(spec.data, spec.protocol, cache_dir=cache_dir)
    method = build_trial_method(spec, data).to(device)
    optim = build_optimization(method, spec, data, device)
    slices = device_slices(data, device, spec.train.data_on_device)
    return Member(spec, data, method, optim, started, slices)
