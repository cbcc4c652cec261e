"""Optimisers, learning-rate schedules, gradient clipping and mixed precision of the loop.

A method gets its optimisers from :meth:`mismatch.methods.Method.configure_optimizers`, which
by default builds one optimiser over :meth:`~mismatch.methods.Method.param_groups` with the
functions here; the loop wraps what it returns in an :class:`Optimization` and only calls
that. Schedules are PyTorch's own (``torch.optim.lr_scheduler``), stepped once per optimiser
step. Only torch is imported at run time, so methods and the loop can both use this module.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.optim import lr_scheduler

if TYPE_CHECKING:
    from mismatch.config import ScheduleSpec, TrainSpec

_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


@dataclass
class OptimizerSetup:
    """One optimiser and the learning-rate schedule stepped after each of its steps."""

    optimizer: torch.optim.Optimizer
    scheduler: lr_scheduler.LRScheduler


def build_optimizer(groups: list[dict[str, Any]], train: TrainSpec) -> torch.optim.Optimizer:
    """``train.optimizer`` over parameter groups; a group without its own ``lr`` (or
    ``weight_decay``) uses the spec's. Adam (paper), AdamW (authors' code) or SGD."""
    kwargs: dict[str, Any] = {"lr": train.lr, "weight_decay": train.effective_weight_decay()}
    if train.optimizer == "sgd":
        kwargs.update(momentum=train.effective_momentum(), nesterov=train.nesterov)
    return _OPTIMIZERS[train.optimizer](groups, **kwargs)


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: ScheduleSpec, epochs: int, steps_per_epoch: int
) -> lr_scheduler.LRScheduler:
    """The schedule of ``schedule`` for a run of ``epochs`` x ``steps_per_epoch`` steps.

    ``constant`` is a LambdaLR of factor 1 (the rate stays exactly ``lr``); a warm-up is a
    LinearLR followed by the main schedule in a SequentialLR.
    """
    unit = steps_per_epoch if schedule.unit == "epochs" else 1
    total = epochs * steps_per_epoch
    warmup = min(schedule.warmup * unit, total)
    length = max(total - warmup, 1)  # T: the main schedule's length in steps
    if schedule.name == "poly":
        main: lr_scheduler.LRScheduler = lr_scheduler.PolynomialLR(
            optimizer, total_iters=length, power=schedule.effective_power()
        )
    elif schedule.name == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=length, eta_min=schedule.effective_min_lr())
    elif schedule.name == "step":
        assert schedule.step_size is not None  # the spec requires it for this schedule
        main = lr_scheduler.StepLR(optimizer, step_size=schedule.step_size * unit, gamma=schedule.effective_gamma())
    else:
        main = lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    if warmup == 0:
        return main
    warm = lr_scheduler.LinearLR(optimizer, start_factor=schedule.warmup_start, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup])


def effective_precision(precision: str, device: torch.device) -> str:
    """The precision a trial trains in: mixed precision needs CUDA, so on a CPU (a spec with
    ``device: auto`` on a machine without a GPU) it is ``none`` and a warning says so."""
    if precision != "none" and device.type != "cuda":
        warnings.warn(f"precision: {precision} needs CUDA; training on {device.type} in float32", stacklevel=2)
        return "none"
    return precision


class Optimization:
    """What the loop steps besides the method: its optimisers and their schedules, the
    fp16 gradient scaler, gradient clipping and the autocast context of a training step."""

    def __init__(self, setups: list[OptimizerSetup], train: TrainSpec, device: torch.device) -> None:
        if not setups:
            raise ValueError("configure_optimizers returned no optimiser")
        self.setups = setups
        self.precision = effective_precision(train.precision, device)
        self.device = device
        self.clip = train.clip_grad_norm
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to bf16 / fp16 on CUDA for ``precision: bf16 | fp16``; else nothing."""
        if self.precision == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """Every parameter of every optimiser."""
        for setup in self.setups:
            for group in setup.optimizer.param_groups:
                yield from group["params"]

    def step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` and step every optimiser, then every schedule.

        With fp16 the loss is scaled and the gradients unscaled before clipping; clipping
        bounds the norm of all the optimisers' gradients together.
        """
        for setup in self.setups:
            setup.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.clip is not None:
            if self.scaler:
                for setup in self.setups:
                    self.scaler.unscale_(setup.optimizer)
            torch.nn.utils.clip_grad_norm_(list(self.parameters()), self.clip)
        for setup in self.setups:
            if self.scaler:
                self.scaler.step(setup.optimizer)
            else:
                setup.optimizer.step()
            setup.scheduler.step()
        if self.scaler:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, schedule and scaler state, for a checkpoint (plain data and tensors)."""
        return {
            "optimizers": [s.optimizer.state_dict() for s in self.setups],
            "schedulers": [s.scheduler.state_dict() for s in self.setups],
            "scaler": self.scaler.state_dict() if self.scaler else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if len(state["optimizers"]) != len(self.setups):
            raise ValueError(f"checkpoint has {len(state['optimizers'])} optimisers, the method {len(self.setups)}")
        for setup, opt, sched in zip(self.setups, state["optimizers"], state["schedulers"]):
            setup.optimizer.load_state_dict(opt)
            setup.scheduler.load_state_dict(sched)
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
