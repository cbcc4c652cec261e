"""THE training loop: K members (K = 1: a trial alone) under their spec's stream protocol.

:func:`fit` trains a run's members epoch by epoch: :func:`train_epoch` draws every member's
batches (:mod:`mismatch.trial.batches`), hands each step's batches to a stepper
(:mod:`mismatch.trial.steppers`: each member alone, or :mod:`mismatch.trial.fused`: all
members as one vmapped step), sums the losses on the device and checks them for non-finite
values; after each epoch every live member validates, keeps its history and (in the last K
epochs) a snapshot, the run writes its checkpoint and the hook sees each member's report.
A trial alone and a fused member go through these same lines: fusion is only a stepper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mismatch.trial.batches import epoch_batches
from mismatch.trial.checkpoint import load_checkpoint, save_checkpoint
from mismatch.trial.evaluate import validate
from mismatch.trial.members import Member, snapshot_epochs
from mismatch.trial.state import EpochReport, NonFiniteLossError
from mismatch.trial.steppers import Stepper

__all__ = ["fit", "train_epoch"]

Sums = dict[str, torch.Tensor]  # each loss term's running sum per member, float64 (K,) on the device
Counts = dict[str, np.ndarray]  # how many of a member's steps each term appeared in (K,)


def _accumulate(sums: Sums, counts: Counts, rows: list[int], losses: dict[str, torch.Tensor], size: int) -> None:
    # every member in order (a trial alone, a whole group): a plain add, no index tensor per step
    index = None if rows == list(range(size)) else torch.as_tensor(rows, device=next(iter(losses.values())).device)
    for name, value in losses.items():
        if name not in sums:
            sums[name] = torch.zeros(size, dtype=torch.float64, device=value.device)
            counts[name] = np.zeros(size, dtype=np.int64)
        value = value.double()  # float64: the means equal a host-side sum's
        if index is None:
            sums[name].add_(value)
        else:
            sums[name].index_add_(0, index, value)
        counts[name][rows] += 1


def _check(members: list[Member], rows: list[int], sums: Sums, counts: Counts, unchecked: dict[int, int],
           epoch: int, final: bool) -> None:
    """Read the running sums back (one device sync for every member) and fail each member of
    ``rows`` with a NaN or infinite sum: a sum finite at the previous check got its value in
    steps ``unchecked[k]``..now; a term other than the total ``loss`` is named when at fault."""
    if not sums:
        return
    names = list(sums)
    values = torch.stack([sums[n] for n in names]).tolist()
    for k in rows:
        member = members[k]
        if member.error is not None:
            continue
        last = member.state.step - 1 if final else member.state.step
        bad = [(n, v[k]) for n, v in zip(names, values) if counts[n][k] and not math.isfinite(v[k])]
        if bad:
            name, value = next(((n, v) for n, v in bad if n != "loss"), bad[0])
            first = unchecked[k]
            steps = f"step {first}" if first == last else f"steps {first}-{last}"
            member.error = NonFiniteLossError(f"loss '{name}' is {value} in {steps} (epoch {epoch})")
        unchecked[k] = last + 1


def train_epoch(members: list[Member], stepper: Stepper, epoch: int) -> dict[int, dict[str, float]]:
    """One pass over every live member's stream; each member's mean of every loss term over
    the steps it appeared in. The epoch lasts as long as the longest stream; a member whose
    stream has ended, or whose loss became non-finite, takes no more steps.

    Losses are read back every ``train.check_every`` steps for the non-finite check and once
    at the end (a member that fails keeps the error; :func:`fit` raises it for a trial alone).
    """
    live = [k for k, m in enumerate(members) if m.error is None]
    for k in live:
        members[k].method.train()
    streams = {k: iter(epoch_batches(m.data, epoch, m.spec.train, m.method.uses_unlabelled, m.slices))
               for k, m in ((k, members[k]) for k in live)}
    lengths = {k: members[k].steps for k in live}
    sums: Sums = {}
    counts: Counts = {}
    unchecked = {k: members[k].state.step for k in live}
    check_every = members[0].spec.train.check_every
    for i in range(max(lengths.values(), default=0)):
        batches = {k: next(streams[k]) for k in live if i < lengths[k] and members[k].error is None}
        if not batches:
            break
        for rows, losses in stepper.step(batches, epoch):
            _accumulate(sums, counts, rows, losses, len(members))
        if (i + 1) % check_every == 0:
            _check(members, list(batches), sums, counts, unchecked, epoch, final=False)
        for k, batch in batches.items():
            member = members[k]
            if member.error is None:
                member.method.after_step()
                member.state.step += 1
                member.state.labelled_presentations += batch.n_labelled or 0
    _check(members, live, sums, counts, unchecked, epoch, final=True)
    values = {n: s.tolist() for n, s in sums.items()}
    return {k: {n: values[n][k] / int(counts[n][k]) for n in sums if counts[n][k]}  # Python floats: checkpoints
            for k in live if members[k].error is None}


def end_epoch(member: Member, losses: dict[str, float], elapsed: float, device: torch.device) -> EpochReport:
    """Validation, history and (in the last K epochs) a snapshot of one member after an epoch;
    its time is the run's training time and its own validation."""
    state, spec = member.state, member.spec
    start = time.perf_counter()
    val = validate(member.method, member.data, device)
    elapsed += time.perf_counter() - start
    state.train_time_s += elapsed
    state.history.append({"epoch": state.epoch, "time_s": elapsed, **{f"loss_{k}": v for k, v in losses.items()}, **val})
    if state.epoch >= spec.train.epochs - snapshot_epochs(spec):
        state.snapshots.append({k: v.detach().cpu().clone() for k, v in member.method.state_dict().items()})
    report = EpochReport(state.epoch, losses, val, elapsed)
    state.epoch += 1
    return report


def fit(
    members: list[Member],
    stepper: Stepper,
    device: torch.device,
    on_epoch_end: Callable[[int, EpochReport], None] | None = None,
    checkpoint: Path | None = None,
    group: bool = False,
) -> None:
    """Train the members for their ``train.epochs`` epochs (they share it), resuming from
    ``checkpoint`` when it exists and writing it after every epoch (``group``: the fused
    format, one entry per member). ``on_epoch_end(k, report)`` sees every member still
    training after each epoch. A member whose loss becomes NaN or infinite keeps its
    :class:`~mismatch.trial.state.NonFiniteLossError` and idles; the others go on."""
    if checkpoint and checkpoint.exists():
        load_checkpoint(checkpoint, members, stepper, group)
    for m in members:
        m.state.resumed_from_epoch = m.state.epoch
    epochs = members[0].spec.train.epochs
    while (epoch := members[0].state.epoch) < epochs and any(m.error is None for m in members):
        start = time.perf_counter()
        losses = train_epoch(members, stepper, epoch)
        elapsed = time.perf_counter() - start
        if not group and members[0].error is not None:
            return  # a trial alone fails here, its last checkpoint intact (a retry gives the same NaN)
        reports = {k: end_epoch(members[k], losses[k], elapsed, device) for k in losses}
        for k, m in enumerate(members):
            if k not in reports:
                m.state.epoch += 1  # a failed member idles; the run's epoch count moves on
        if checkpoint:
            save_checkpoint(checkpoint, members, stepper, group)
        if on_epoch_end:
            for k, report in reports.items():
                on_epoch_end(k, report)
