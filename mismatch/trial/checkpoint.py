"""A run's checkpoint: everything a retry needs to continue its members where they stopped.

A trial alone writes ``trial.pt`` (its weights, optimisers, schedules, gradient scaler, loop
state, snapshots and the RNG); a fused group writes ``fused.pt``, one such entry per member
(with the error of a member that failed) beside the stepper's own state. Both are written
atomically and hold weights only (no pickled code): ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from mismatch.atomic import write_atomic
from mismatch.trial.members import Member
from mismatch.trial.state import NonFiniteLossError, TrainState
from mismatch.trial.steppers import Stepper

__all__ = ["GROUP_CHECKPOINT", "TRIAL_CHECKPOINT", "checkpoint_history", "load_checkpoint", "save_checkpoint"]

TRIAL_CHECKPOINT, GROUP_CHECKPOINT = "trial.pt", "fused.pt"


def _entry(member: Member, stepper: Stepper, k: int, group: bool) -> dict[str, Any]:
    weights = member.method.state_dict()
    return {
        # a group member's tensors are views of the stacked (K, ...) storage, which torch.save would write whole
        "method": {n: t.detach().clone() for n, t in weights.items()} if group else weights,
        **stepper.member_state(k),
        "state": {n: v for n, v in vars(member.state).items() if n != "snapshots"},
        "snapshots": member.state.snapshots,
    }


def save_checkpoint(path: Path, members: list[Member], stepper: Stepper, group: bool) -> None:
    """Write the run's checkpoint to ``path`` atomically (a full disk:
    :class:`~mismatch.atomic.DiskFullError` naming it, the previous checkpoint intact)."""
    if group:
        payload: dict[str, Any] = {
            "members": [{**_entry(m, stepper, k, group), "error": None if m.error is None else str(m.error)}
                        for k, m in enumerate(members)],
            **stepper.state_dict(),
        }
    else:
        payload = _entry(members[0], stepper, 0, group)
    payload["torch_rng"] = torch.get_rng_state()
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # in memory: torch reports a full disk as a RuntimeError, a file write as ENOSPC
    write_atomic(path, buffer.getbuffer())


def _restore(member: Member, stepper: Stepper, k: int, saved: dict[str, Any]) -> None:
    member.method.load_state_dict(saved["method"])  # a group's: copies into the views, the stacked rows
    if "optimizer" in saved and "optimization" not in saved:  # a trial checkpoint before the training hooks
        member.optim.setups[0].optimizer.load_state_dict(saved["optimizer"])
        saved["state"].setdefault("labelled_presentations", saved["state"]["epoch"] * len(member.data.labelled.images))
    else:
        stepper.load_member_state(k, saved)
    member.state = TrainState(**saved["state"], snapshots=saved["snapshots"])
    member.error = NonFiniteLossError(saved["error"]) if saved.get("error") else None


def load_checkpoint(path: Path, members: list[Member], stepper: Stepper, group: bool) -> None:
    """Restore what :func:`save_checkpoint` wrote into the members and the stepper.

    A trial checkpoint of the code before the training hooks (one optimiser under
    ``"optimizer"``, the paper's streaming protocol) still resumes: its labelled presentations,
    which that code did not count, are ``epoch x n_labelled`` (every labelled slice once per
    epoch)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if group:
        for k, (member, saved) in enumerate(zip(members, payload["members"], strict=True)):
            _restore(member, stepper, k, saved)
        stepper.load_state_dict(payload)
    else:
        _restore(members[0], stepper, 0, payload)
    torch.set_rng_state(payload["torch_rng"])


def checkpoint_history(path: Path) -> list[dict[str, Any]]:
    """The per-epoch history (``epoch``, ``time_s``, ``loss_*``, ``val_*``) kept in a trial's
    checkpoint file, without building its network: what a paused search run had trained."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    return list(payload["state"]["history"])
