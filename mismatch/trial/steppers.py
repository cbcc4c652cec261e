"""How the one loop takes a step for K members: the :class:`Stepper` protocol, and the stepper
that steps each member with its own module and optimiser (a trial alone is its K = 1 case).

The loop (:mod:`mismatch.trial.loop`) draws each member's batch, hands the batches to a
stepper, and does everything else itself: sums of the losses, the non-finite check, the
method's ``after_step`` and the counters. A stepper owns only the forward pass, the backward
pass and the optimiser step. :class:`PerMemberStepper` runs torch's own kernels and optimiser
for each member in turn, so its members' arithmetic is op for op that of the trial alone;
:class:`mismatch.trial.fused.GroupedStepper` runs all members as one vmapped step (grouped
convolutions, the masked Adam) for a GPU's throughput.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from mismatch.methods import Batch
from mismatch.trial.members import Member

__all__ = ["PerMemberStepper", "StepLosses", "Stepper"]

#: One stepper call's losses: for each set of members stepped together, their indices and
#: each loss term's values, one per member in that order (float tensors of shape (G,)).
StepLosses = list[tuple[list[int], dict[str, torch.Tensor]]]


class Stepper(Protocol):
    """One optimiser step of the members given batches; the members' own state is theirs."""

    def step(self, batches: dict[int, Batch], epoch: int) -> StepLosses:
        """Forward, backward and optimiser step of every member ``k`` in ``batches`` (its
        schedules stepped too); returns the losses (detached)."""

    def state_dict(self) -> dict[str, Any]:
        """What the group checkpoint keeps of the stepper itself (beside every member's)."""

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s keys from a group checkpoint."""

    def member_state(self, k: int) -> dict[str, Any]:
        """What member ``k``'s checkpoint entry keeps of its optimisation."""

    def load_member_state(self, k: int, saved: dict[str, Any]) -> None:
        """Restore member ``k``'s optimisation from its checkpoint entry."""


@contextmanager
def member_rng(member: Member) -> Iterator[None]:
    """Member ``member``'s torch RNG swapped in for the block (nothing for a trial alone), so
    every member of a group draws the numbers it would draw alone."""
    if member.rng is None:
        yield
        return
    torch.set_rng_state(member.rng)
    try:
        yield
    finally:
        member.rng = torch.get_rng_state()


class PerMemberStepper:
    """Every member stepped in turn with its own module, kernels and torch optimiser: a trial
    alone (K = 1), or a group whose rows must equal its trials alone exactly (on a CPU)."""

    def __init__(self, members: list[Member], device: torch.device) -> None:
        self.members, self.device = members, device

    def step(self, batches: dict[int, Batch], epoch: int) -> StepLosses:
        """Each member's step as :func:`mismatch.trial.loop.train_epoch` of the trial alone."""
        out: StepLosses = []
        for k, batch in batches.items():
            member = self.members[k]
            with member_rng(member):
                with member.optim.autocast():
                    losses = member.method.training_step(batch.to(self.device), epoch)
                member.optim.step(losses["loss"])
            out.append(([k], {name: value.detach().reshape(1) for name, value in losses.items()}))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Nothing beyond the members' entries."""
        return {}

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        """Nothing to restore beyond the members' entries."""

    def member_state(self, k: int) -> dict[str, Any]:
        """The member's optimisers, schedules and gradient scaler (and its RNG in a group)."""
        member = self.members[k]
        entry: dict[str, Any] = {"optimization": member.optim.state_dict()}
        if member.rng is not None:
            entry["member_rng"] = member.rng
        return entry

    def load_member_state(self, k: int, saved: dict[str, Any]) -> None:
        """Restore :meth:`member_state`."""
        member = self.members[k]
        member.optim.load_state_dict(saved["optimization"])
        if "member_rng" in saved:
            member.rng = saved["member_rng"]
