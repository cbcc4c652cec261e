"""Running trials end to end: :func:`run_trial` (one trial) and :func:`run_group` (a fused
group of K), both the same four hops: :func:`~mismatch.trial.members.build_member` for each
trial, a stepper, :func:`~mismatch.trial.loop.fit`, and
:func:`~mismatch.trial.evaluate.evaluate_trial` of each member that finished. Neither imports
Ray: the study runner calls them inside a Ray Tune trial through the ``on_epoch_end`` hook and
the ``checkpoint_dir`` argument.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

from mismatch.config import TrialSpec
from mismatch.fusion.support import check_group
from mismatch.runtime import reset_peak_memory, select_device
from mismatch.trial.checkpoint import GROUP_CHECKPOINT, TRIAL_CHECKPOINT
from mismatch.trial.evaluate import evaluate_trial
from mismatch.trial.fused import GroupedStepper
from mismatch.trial.loop import fit
from mismatch.trial.members import build_member
from mismatch.trial.state import EpochReport, TrialResult
from mismatch.trial.steppers import PerMemberStepper, Stepper

__all__ = ["FUSE_KERNELS", "FuseKernels", "MemberOutcome", "group_stepper", "run_group", "run_trial"]

#: What one member of a group gives back: its rows, or the error that failed it for good.
MemberOutcome = TrialResult | FloatingPointError
#: ``resources.fuse_kernels``: how a fused group steps (see :func:`group_stepper`).
FuseKernels = Literal["auto", "grouped", "per-member"]
FUSE_KERNELS: tuple[str, ...] = ("auto", "grouped", "per-member")


def run_trial(
    spec: TrialSpec,
    *,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
    checkpoint_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> TrialResult:
    """Train and evaluate one trial; deterministic on CPU (the same spec gives the same rows).
    A non-finite loss or prediction raises (:data:`~mismatch.trial.state.NON_FINITE_ERRORS`)."""
    device = select_device(spec.train.device)
    reset_peak_memory(device)
    member = build_member(spec, device, cache_dir)
    hook = (lambda _k, report: on_epoch_end(report)) if on_epoch_end else None
    ckpt = checkpoint_dir / TRIAL_CHECKPOINT if checkpoint_dir else None
    fit([member], PerMemberStepper([member], device), device, hook, ckpt)
    if member.error is not None:
        raise member.error
    return evaluate_trial(member.spec, member.method, member.data, member.state, device, member.started)


def group_stepper(kernels: FuseKernels, device: torch.device) -> type[GroupedStepper] | type[PerMemberStepper]:
    """The stepper of a fused group: ``grouped`` (one vmapped step, grouped convolutions: a
    GPU's throughput), ``per-member`` (each member with its own kernels: rows equal to its
    trial alone, exactly), or ``auto``: grouped on CUDA, per-member elsewhere (a CPU gains
    little from grouping, and there its kernels differ from a trial alone's: docs/studies.md)."""
    if kernels == "grouped" or (kernels == "auto" and device.type == "cuda"):
        return GroupedStepper
    return PerMemberStepper


def run_group(
    specs: list[TrialSpec],
    *,
    kernels: FuseKernels = "auto",
    on_epoch_end: Callable[[int, EpochReport], None] | None = None,
    checkpoint_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> list[MemberOutcome]:
    """Train ``specs`` as one fused group; each member's rows, as if it had trained alone.

    ``on_epoch_end(k, report)`` is called for every member ``k`` still training after each
    epoch. With ``checkpoint_dir`` the group writes one checkpoint (``fused.pt``) per epoch
    and resumes every member from it. A member whose loss becomes NaN or infinite fails
    (its outcome is the :class:`~mismatch.trial.state.NonFiniteLossError`); the others go on.
    Raises ``ValueError`` when the specs cannot train together (:func:`check_group`).
    """
    check_group(specs)
    device = select_device(specs[0].train.device)
    reset_peak_memory(device)
    members = []
    for spec in specs:
        members.append(member := build_member(spec, device, cache_dir))
        member.rng = torch.get_rng_state()  # the CPU generator as its trial alone starts training
    stepper: Stepper = group_stepper(kernels, device)(members, device)
    fit(members, stepper, device, on_epoch_end, checkpoint_dir / GROUP_CHECKPOINT if checkpoint_dir else None,
        group=True)
    return [m.error if m.error is not None else evaluate_trial(m.spec, m.method, m.data, m.state, device, m.started)
            for m in members]
