"""Fused trials: K trials of one method trained as one model in one process.

Design (horizontal fusion, HFTA-style): every member keeps its own :class:`Method` (built
under its own seed, so its initial weights are those of the trial alone), its own data
stream (:func:`mismatch.train.epoch_batches` of its own :class:`TrialData`), optimiser
state, schedule, snapshots and rows. The members' parameters are stacked into (K, ...)
tensors and each member's parameters become views of its row, so validation, snapshots and
:func:`mismatch.evaluate.evaluate_trial` use the member's own module unchanged. One step
runs the method's ``training_step`` once under ``torch.func.vmap`` over the members, with
``torch.func.functional_call`` swapping in the stacked weights (a convolution with batched
weights becomes one grouped convolution). Float method settings that differ between
members (alpha) reach the step as one value per member: the template method's config is a
copy whose differing fields are the vmapped (per-member) scalars.

Members step in lockstep over epochs; an epoch lasts as long as the longest member stream,
and a member whose stream has ended idles (a masked step): :class:`MaskedAdam` leaves its
weights and Adam state bit-identical. Members whose batches differ in composition at a step
(the last, shorter batch of an epoch) run in separate vmapped calls within that step.

Equivalence to training each trial alone (:func:`mismatch.train.run_trial`): the
arithmetic is the same up to floating-point reordering (grouped vs plain convolutions), and
the optimiser is bit-identical to torch's Adam for given gradients. Methods whose steps
draw random numbers would draw them from one generator under vmap (``randomness="different"``):
such methods could only be statistically equivalent; the fusable built-in methods (MisMatch, CPS)
draw none, so they are equivalent up to reordering (tests/fusion/test_fused_equivalence.py).
A member's method is built by :func:`mismatch.train.build_trial_method`, the builder of the trial
alone, so multi-class and 3D members get the trial's own network (and its class rows, patches
and sliding-window evaluation: tests/fusion/test_fused_shapes.py).
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from mismatch.config import TrialSpec
from mismatch.data import TrialData, load_trial_data
from mismatch.data.atomic import disk_full_names
from mismatch.evaluate import TrialResult, evaluate_trial, utc_now, validate
from mismatch.fusion.optim import AdamSettings, MaskedAdam
from mismatch.fusion.support import check_group, member_scalars
from mismatch.methods import Batch, Method
from mismatch.optim import Optimization
from mismatch.runtime import reset_peak_memory, seed_everything, select_device
from mismatch.train import (
    EpochReport,
    NonFiniteLossError,
    TrainState,
    build_optimization,
    build_trial_method,
    epoch_batches,
    snapshot_epochs,
    steps_per_epoch,
)

__all__ = ["FusedModel", "MemberOutcome", "train_fused"]

#: What one member of a group gives back: its rows, or the error that failed it for good.
MemberOutcome = TrialResult | FloatingPointError
CHECKPOINT_NAME = "fused.pt"


@dataclass
class _Member:
    """One trial of the group: everything it would have if it trained alone."""

    spec: TrialSpec
    data: TrialData
    method: Method
    optim: Optimization  # its torch optimisers never step: they give the groups' lr and the schedules
    started: str
    state: TrainState = field(default_factory=TrainState)
    error: FloatingPointError | None = None

    @property
    def steps(self) -> int:
        return steps_per_epoch(self.data, self.spec.train, self.method.uses_unlabelled)


class _StepModule(nn.Module):
    """``forward`` is the method's training step, so ``functional_call`` can run it."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        return self.method.training_step(batch, epoch)


class MemberConfig:
    """A method's config with some fields replaced by one member's (vmapped) scalars.

    A plain object rather than pydantic's ``model_copy``: torch.compile traces attribute
    reads through it, while the copy breaks the graph and the fused step runs eagerly."""

    def __init__(self, base: Any, scalars: dict[str, torch.Tensor]) -> None:
        self._base, self._scalars = base, scalars

    def __getattr__(self, name: str) -> Any:
        own = self.__dict__  # not self._base: that would recurse here before __init__ (copy, pickle)
        if name in own.get("_scalars", {}):
            return own["_scalars"][name]
        if "_base" not in own:
            raise AttributeError(name)
        return getattr(own["_base"], name)


class FusedModel:
    """K members' parameters stacked (K, ...), the members' own parameters views of them."""

    def __init__(self, methods: list[Method], scalars: dict[str, list[float]]) -> None:
        self.size = len(methods)
        template = copy.deepcopy(methods[0])
        self.step_module = _StepModule(template)
        self.base_config = template.config
        named = [dict(m.named_parameters()) for m in methods]
        buffers = [dict(m.named_buffers()) for m in methods]
        self.params = {n: torch.stack([p[n].detach() for p in named]).requires_grad_() for n in named[0]}
        self.buffers = {n: torch.stack([b[n] for b in buffers]) for n in buffers[0]}
        device = next(iter(self.params.values())).device
        # float32: a Python float in the step is cast to float32 by the op that uses it
        self.scalars = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in scalars.items()}
        for k, method in enumerate(methods):
            for n, p in method.named_parameters():
                p.data = self.params[n].detach()[k]
            for n, b in method.named_buffers():
                b.data = self.buffers[n][k]

    def _member_losses(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                       scalars: dict[str, torch.Tensor], image: torch.Tensor, label: torch.Tensor,
                       n_labelled: int, epoch: int) -> dict[str, torch.Tensor]:
        """One member's losses (called under vmap: every tensor argument is the member's row)."""
        labelled = torch.arange(image.shape[0], device=image.device) < n_labelled
        batch = Batch(image, label, labelled, n_labelled)
        state = {f"method.{n}": t for n, t in {**params, **buffers}.items()}
        method = self.step_module.method
        method.config = MemberConfig(self.base_config, scalars) if scalars else self.base_config
        try:
            return functional_call(self.step_module, state, (batch, epoch))
        finally:  # no member's (vmapped) scalar outlives the call: torch.compile could not return it
            method.config = self.base_config

    def losses_and_grads(self, rows: list[int], batches: list[Batch], epoch: int, device: torch.device,
                         optim: Optimization) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
        """The members ``rows``' losses on their ``batches`` (same composition), each (G,),
        and the gradients (K, ...) of their losses (zero for other members; ``None`` for a
        tensor no loss uses, as torch leaves a solo trial's unused parameters without one)."""
        everyone = rows == list(range(self.size))
        index = torch.as_tensor(rows, device=device)
        pick = (lambda t: t) if everyone else (lambda t: t[index])
        params = {n: pick(p) for n, p in self.params.items()}
        buffers = {n: pick(b) for n, b in self.buffers.items()}
        scalars = {n: pick(s) for n, s in self.scalars.items()}
        image = torch.stack([b.image for b in batches]).to(device)
        label = torch.stack([b.label for b in batches]).to(device)
        step = partial(self._member_losses, n_labelled=batches[0].n_labelled, epoch=epoch)
        with optim.autocast():
            losses = vmap(step, randomness="different")(params, buffers, scalars, image, label)
        names = list(self.params)
        grads = torch.autograd.grad(losses["loss"].sum(), [self.params[n] for n in names], allow_unused=True)
        return {k: v.detach() for k, v in losses.items()}, dict(zip(names, grads))


def _adam_settings(optims: list[Optimization], spec: TrialSpec) -> AdamSettings:
    """The Adam settings every member's every parameter group shares (else not fusable)."""
    groups = [g for o in optims for s in o.setups for g in s.optimizer.param_groups]
    settings = {(tuple(g["betas"]), g["eps"], g["weight_decay"]) for g in groups}
    if len(settings) != 1 or any(g.get("amsgrad") for g in groups):
        raise ValueError("fused members need one set of Adam settings (betas, eps, weight decay) for every parameter")
    betas, eps, weight_decay = settings.pop()
    return AdamSettings(betas=betas, eps=eps, weight_decay=weight_decay, decoupled=spec.train.optimizer == "adamw")


def _param_groups(member: _Member) -> dict[str, dict[str, Any]]:
    """Each parameter name's torch param group in the member's optimisers (its lr lives there)."""
    names = {id(p): n for n, p in member.method.named_parameters()}
    located = {names[id(p)]: g for s in member.optim.setups for g in s.optimizer.param_groups for p in g["params"]}
    missing = set(names.values()) - set(located)
    if missing:
        raise ValueError(f"parameters outside every optimiser cannot be fused: {sorted(missing)[:3]}")
    return located


def _build_member(spec: TrialSpec, device: torch.device, cache_dir: Path | None) -> _Member:
    """The member as :func:`mismatch.train.run_trial` builds the trial (same seed, same order)."""
    started = utc_now()
    seed_everything(spec.train.seed, deterministic=spec.train.deterministic, device=device)
    data = load_trial_data(spec.data, spec.protocol, cache_dir=cache_dir)
    method = build_trial_method(spec, data).to(device)
    optim = build_optimization(method, spec, data, device)
    for setup in optim.setups:
        setup.optimizer._opt_called = True  # type: ignore[attr-defined]  # schedules step without it; silence torch's warning
    return _Member(spec, data, method, optim, started)


class _FusedRun:
    """The group's training state and loop."""

    def __init__(self, members: list[_Member], device: torch.device) -> None:
        self.members = members
        self.device = device
        specs = [m.spec for m in members]
        names = member_scalars(specs)
        scalars = {n: [float(getattr(s.method, n)) for s in specs] for n in names}
        self.model = FusedModel([m.method for m in members], scalars)
        self.optimizer = MaskedAdam(self.model.params, _adam_settings([m.optim for m in members], specs[0]))
        self.groups = [_param_groups(m) for m in members]

    def lrs(self) -> dict[str, np.ndarray]:
        """Each tensor's current learning rate per member (host floats: no device sync)."""
        return {n: np.array([g[n]["lr"] for g in self.groups]) for n in self.model.params}

    def epoch(self, epoch: int) -> dict[int, dict[str, float]]:
        """One fused epoch; the mean losses of every member still training."""
        live = [k for k, m in enumerate(self.members) if m.error is None]
        for k in live:
            self.members[k].method.train()
        streams = {k: iter(epoch_batches(self.members[k].data, epoch, self.members[k].spec.train,
                                         self.members[k].method.uses_unlabelled)) for k in live}
        lengths = {k: self.members[k].steps for k in live}
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, np.ndarray] = {}
        unchecked = {k: self.members[k].state.step for k in live}
        check_every = self.members[0].spec.train.check_every
        for i in range(max(lengths.values(), default=0)):
            batches = {k: next(streams[k]) for k in live if i < lengths[k] and self.members[k].error is None}
            self._step(batches, epoch, sums, counts, check=(i + 1) % check_every == 0, unchecked=unchecked)
        self._check(list(streams), sums, counts, unchecked, epoch, final=True)
        means = {}
        values = {n: s.tolist() for n, s in sums.items()}
        for k in live:
            if self.members[k].error is None:
                means[k] = {n: values[n][k] / int(counts[n][k]) for n in sums if counts[n][k]}  # Python floats: checkpoints
        return means

    def _step(self, batches: dict[int, Batch], epoch: int, sums: dict[str, torch.Tensor], counts: dict[str, np.ndarray],
              check: bool, unchecked: dict[int, int]) -> None:
        by_composition: dict[tuple[Any, ...], list[int]] = {}
        for k, b in batches.items():
            by_composition.setdefault((b.n_labelled, tuple(b.image.shape)), []).append(k)
        grads: dict[str, torch.Tensor] = {}
        stepped: dict[str, list[int]] = {n: [] for n in self.model.params}
        for rows in by_composition.values():
            losses, g = self.model.losses_and_grads(rows, [batches[k] for k in rows], epoch, self.device,
                                                    self.members[rows[0]].optim)
            index = torch.as_tensor(rows, device=self.device)
            for name, value in losses.items():
                if name not in sums:
                    sums[name] = torch.zeros(len(self.members), dtype=torch.float64, device=self.device)
                    counts[name] = np.zeros(len(self.members), dtype=np.int64)
                sums[name].index_add_(0, index, value.double())
                counts[name][rows] += 1
            for n, grad in g.items():
                if grad is not None:  # composition groups hold disjoint members: adding exact zeros
                    grads[n] = grad if n not in grads else grads[n] + grad
                    stepped[n].extend(rows)
        if check:
            self._check(list(batches), sums, counts, unchecked, epoch, final=False)
        ok = {k for k in batches if self.members[k].error is None}
        self.optimizer.step(grads, {n: np.array(sorted(set(r) & ok), dtype=np.int64) for n, r in stepped.items()},
                            self.lrs())
        for k in sorted(ok):
            member = self.members[k]
            for setup in member.optim.setups:
                setup.scheduler.step()
            member.method.after_step()
            member.state.step += 1
            member.state.labelled_presentations += batches[k].n_labelled or 0

    def _check(self, rows: list[int], sums: dict[str, torch.Tensor], counts: dict[str, np.ndarray],
               unchecked: dict[int, int], epoch: int, final: bool) -> None:
        """Solo's non-finite check, per member: a member with a NaN or infinite loss fails
        (with the message the trial alone would raise) and idles from then on."""
        if not sums:
            return
        names = list(sums)
        values = torch.stack([sums[n] for n in names]).tolist()  # one sync for all members
        for k in rows:
            member = self.members[k]
            if member.error is not None:
                continue
            last = member.state.step - 1 if final else member.state.step
            bad = [(n, v[k]) for n, v in zip(names, values) if counts[n][k] and not np.isfinite(v[k])]
            if bad:
                name, value = next(((n, v) for n, v in bad if n != "loss"), bad[0])
                first = unchecked[k]
                steps = f"step {first}" if first == last else f"steps {first}-{last}"
                member.error = NonFiniteLossError(f"loss '{name}' is {value} in {steps} (epoch {epoch})")
            unchecked[k] = last + 1

    def state_dict(self) -> dict[str, Any]:
        """The group's checkpoint: every member's weights, schedules, loop state and error,
        the masked optimiser's moments and step counts, and the RNG."""
        return {
            "members": [{
                "method": {k: v.detach().clone() for k, v in m.method.state_dict().items()},  # not the stacked storage
                "schedulers": [s.scheduler.state_dict() for s in m.optim.setups],
                "state": {k: v for k, v in vars(m.state).items() if k != "snapshots"},
                "snapshots": m.state.snapshots,
                "error": None if m.error is None else str(m.error),
            } for m in self.members],
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (weights copied into the stacked rows)."""
        for member, saved in zip(self.members, payload["members"], strict=True):
            member.method.load_state_dict(saved["method"])  # copies into the views: the stacked rows
            for setup, sched in zip(member.optim.setups, saved["schedulers"], strict=True):
                setup.scheduler.load_state_dict(sched)
            member.state = TrainState(**saved["state"], snapshots=saved["snapshots"])
            member.error = NonFiniteLossError(saved["error"]) if saved["error"] else None
        self.optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["torch_rng"])


def _save(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write (temp file + rename), as :func:`mismatch.train.save_checkpoint`."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    tmp = path.with_suffix(".tmp")
    try:
        with disk_full_names(path):
            tmp.write_bytes(buffer.getbuffer())
            tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _end_epoch(member: _Member, losses: dict[str, float], elapsed: float, device: torch.device) -> EpochReport:
    """Validation, history and snapshot of one member after a fused epoch (as ``fit`` does)."""
    state, spec = member.state, member.spec
    start = time.perf_counter()
    val = validate(member.method, member.data, device)
    elapsed += time.perf_counter() - start  # the group's training time and the member's own validation
    state.train_time_s += elapsed
    state.history.append({"epoch": state.epoch, "time_s": elapsed, **{f"loss_{k}": v for k, v in losses.items()}, **val})
    if state.epoch >= spec.train.epochs - snapshot_epochs(spec):
        state.snapshots.append({k: v.detach().cpu().clone() for k, v in member.method.state_dict().items()})
    report = EpochReport(state.epoch, losses, val, elapsed)
    state.epoch += 1
    return report


def train_fused(
    specs: list[TrialSpec],
    *,
    on_epoch_end: Callable[[int, EpochReport], None] | None = None,
    checkpoint_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> list[MemberOutcome]:
    """Train ``specs`` as one fused group; each member's rows, as if it had trained alone.

    ``on_epoch_end(k, report)`` is called for every member ``k`` still training after each
    epoch. With ``checkpoint_dir`` the group writes one checkpoint (``fused.pt``) per epoch
    and resumes every member from it. A member whose loss becomes NaN or infinite fails
    (its outcome is the :class:`~mismatch.train.NonFiniteLossError`); the others go on.
    Raises ``ValueError`` when the specs cannot train together (:func:`check_group`).
    """
    check_group(specs)
    device = select_device(specs[0].train.device)
    reset_peak_memory(device)
    members = [_build_member(spec, device, cache_dir) for spec in specs]
    run = _FusedRun(members, device)
    ckpt = checkpoint_dir / CHECKPOINT_NAME if checkpoint_dir else None
    if ckpt and ckpt.exists():
        run.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    for m in members:
        m.state.resumed_from_epoch = m.state.epoch
    epochs = specs[0].train.epochs
    while (epoch := members[0].state.epoch) < epochs:
        start = time.perf_counter()
        losses = run.epoch(epoch)
        elapsed = time.perf_counter() - start
        reports = {k: _end_epoch(members[k], losses[k], elapsed, device) for k in losses}
        for k, m in enumerate(members):
            if k not in reports:
                m.state.epoch += 1  # a failed member idles; the group's epoch count moves on
        if ckpt:
            _save(ckpt, run.state_dict())
        if on_epoch_end:
            for k, report in reports.items():
                on_epoch_end(k, report)
    return [m.error if m.error is not None else evaluate_trial(m.spec, m.method, m.data, m.state, device, m.started)
            for m in members]
