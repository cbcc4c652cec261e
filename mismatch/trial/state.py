"""What a trial carries and gives back: its loop state, its rows, and the errors that fail it.

The bottom of :mod:`mismatch.trial`: the loop, the fused stepper, evaluation and the study
runner all import these types downward, and nothing here imports the rest of the package.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from mismatch.config import SpecError
from mismatch.data.errors import DataError

__all__ = [
    "NON_FINITE_ERRORS", "PERMANENT_ERRORS", "EpochReport", "NonFiniteLossError", "NonFiniteProbabilityError", "NonFiniteVolumeError",
    "TrainState", "TrialResult", "utc_now",
]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the steps and the loss term.

    Losses are checked every ``train.check_every`` steps (and at the end of each epoch), so
    the message names the range of steps in which the value appeared (0-based, counted over
    the whole trial).
    """


class NonFiniteProbabilityError(FloatingPointError):
    """A predicted probability is NaN or infinite; the message names the image.

    Thresholding would count a NaN pixel as background and the ECE of its image would be NaN,
    which pandas skips when pooling: the trial would look fine. It fails instead.
    """


class NonFiniteVolumeError(FloatingPointError):
    """A predicted probability of a whole volume is NaN or infinite; the message names the case."""


NON_FINITE_ERRORS: tuple[type[FloatingPointError], ...] = (NonFiniteLossError, NonFiniteProbabilityError,
                                                           NonFiniteVolumeError)
"""Errors that fail a trial for good (a retry gives the same NaN): recorded as failed rows."""

PERMANENT_ERRORS: tuple[type[Exception], ...] = (*NON_FINITE_ERRORS, DataError, SpecError)
"""Errors that would recur on every retry: a study and ``mismatch train`` alike record the
trial as failed at once (one failed row, :func:`mismatch.trial.evaluate.failed_trial_row`)."""


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


@dataclass
class TrialResult:
    """The rows one trial produces (see docs/results-schema.md)."""

    trial: dict[str, Any]
    images: pd.DataFrame
    epochs: pd.DataFrame
    predictions: dict[str, np.ndarray] | None = None
    splits: dict[str, dict[str, list[str]]] | None = None
    decoders: pd.DataFrame | None = None
    cases: pd.DataFrame | None = None
    classes: pd.DataFrame | None = None


def utc_now() -> str:
    """The current UTC time as ISO-8601 with milliseconds (``started_at`` / ``finished_at``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
