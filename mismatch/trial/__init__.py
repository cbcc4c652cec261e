"""One trial end to end: its parts, its batches, THE loop, fusion's stepper, evaluation, rows.

Layers, bottom up (checked by import-linter): :mod:`~mismatch.trial.state` (the loop state,
results and errors every layer may import), :mod:`~mismatch.trial.cases`,
:mod:`~mismatch.trial.volumes` and :mod:`~mismatch.trial.evaluate` (prediction and the one
``evaluate_trial``), :mod:`~mismatch.trial.batches`, :mod:`~mismatch.trial.members` (the one
builder), :mod:`~mismatch.trial.steppers` and :mod:`~mismatch.trial.fused` (how K members take
a step), :mod:`~mismatch.trial.checkpoint`, :mod:`~mismatch.trial.loop` (``fit``) and
:mod:`~mismatch.trial.run` (``run_trial``, ``run_group``). A trial alone is a run of one
member; a fused group is K members behind the grouped stepper, through the same loop.

The names below load on first use, so importing this package imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "run_trial": "run", "run_group": "run", "MemberOutcome": "run",
    "fit": "loop", "train_epoch": "loop",
    "evaluate_trial": "evaluate", "failed_trial_row": "evaluate", "validate": "evaluate",
    "TrainState": "state", "TrialResult": "state", "EpochReport": "state", "NonFiniteLossError": "state",
    "NON_FINITE_ERRORS": "state",
    "epoch_batches": "batches", "steps_per_epoch": "batches",
    "build_member": "members", "build_trial_method": "members",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """The public names of the package, imported from their module on first use."""
    if name in _HOMES:
        return getattr(importlib.import_module(f"mismatch.trial.{_HOMES[name]}"), name)
    raise AttributeError(name)
