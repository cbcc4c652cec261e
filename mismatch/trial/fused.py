"""The grouped stepper: K members of one method stepped as one vmapped model (horizontal fusion).

Design (HFTA-style): every member keeps its own :class:`~mismatch.trial.members.Member`
(built by :func:`~mismatch.trial.members.build_member` under its own seed, so its initial
weights are those of the trial alone), its own batches, schedules, snapshots and rows; the
one loop (:mod:`mismatch.trial.loop`) drives it exactly as it drives a trial alone. The
members' parameters are stacked into (K, ...) tensors and each member's parameters become
views of its row, so validation, snapshots and evaluation use the member's own module
unchanged. One step runs the method's ``training_step`` once under ``torch.func.vmap`` over
the members, with ``torch.func.functional_call`` swapping in the stacked weights (a
convolution with batched weights becomes one grouped convolution). Float method settings
that differ between members (alpha) reach the step as one value per member: the template
method's config is a copy whose differing fields are the vmapped (per-member) scalars. A
member whose stream has ended idles: :class:`~mismatch.fusion.optim.MaskedAdam` leaves its
weights and Adam state bit-identical. Members whose batches differ in composition at a step
(the last, shorter batch of an epoch) run in separate vmapped calls within that step.

Equivalence to the trial alone: the arithmetic is the same up to floating-point reordering,
and the optimiser is bit-identical to torch's Adam for given gradients. On a CPU the
reordering is not small: a trial alone runs oneDNN's convolutions and the grouped step
PyTorch's native grouped ones, and after a few epochs the per-image IoU of the smoke study
differed by up to 2.28e-2. So ``resources.fuse_kernels: auto`` (the default) uses this
stepper on CUDA only and :class:`~mismatch.trial.steppers.PerMemberStepper` on a CPU (rows
equal to the trials alone, exactly); ``grouped`` asks for this one anywhere. Methods whose
steps draw random numbers would draw them from one generator under vmap: the fusable
built-in methods (MisMatch, CPS) draw none (:mod:`mismatch.fusion.support`).
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from mismatch.config import TrialSpec
from mismatch.fusion.optim import AdamSettings, MaskedAdam
from mismatch.fusion.support import member_scalars
from mismatch.methods import Batch, Method
from mismatch.optim import Optimization
from mismatch.trial.batches import epoch_batches
from mismatch.trial.members import Member, build_member
from mismatch.trial.steppers import StepLosses

__all__ = ["FusedModel", "GroupedStepper", "MemberConfig", "member_peak_bytes"]


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


def _param_groups(member: Member) -> dict[str, dict[str, Any]]:
    """Each parameter name's torch param group in the member's optimisers (its lr lives there)."""
    names = {id(p): n for n, p in member.method.named_parameters()}
    located = {names[id(p)]: g for s in member.optim.setups for g in s.optimizer.param_groups for p in g["params"]}
    missing = set(names.values()) - set(located)
    if missing:
        raise ValueError(f"parameters outside every optimiser cannot be fused: {sorted(missing)[:3]}")
    return located


class GroupedStepper:
    """All members as one vmapped step over stacked weights, stepped by one masked Adam."""

    def __init__(self, members: list[Member], device: torch.device) -> None:
        self.members, self.device = members, device
        specs = [m.spec for m in members]
        names = member_scalars(specs)
        scalars = {n: [float(getattr(s.method, n)) for s in specs] for n in names}
        self.model = FusedModel([m.method for m in members], scalars)
        self.optimizer = MaskedAdam(self.model.params, _adam_settings([m.optim for m in members], specs[0]))
        self.groups = [_param_groups(m) for m in members]
        for member in members:
            for setup in member.optim.setups:
                setup.optimizer._opt_called = True  # type: ignore[attr-defined]  # schedules step without it; silence torch's warning

    def lrs(self) -> dict[str, np.ndarray]:
        """Each tensor's current learning rate per member (host floats: no device sync)."""
        return {n: np.array([g[n]["lr"] for g in self.groups]) for n in self.model.params}

    def step(self, batches: dict[int, Batch], epoch: int) -> StepLosses:
        """One vmapped call per batch composition, then one masked Adam step and every
        stepped member's schedules (the member's torch optimisers only hold its rates)."""
        by_composition: dict[tuple[Any, ...], list[int]] = {}
        for k, b in batches.items():
            by_composition.setdefault((b.n_labelled, tuple(b.image.shape)), []).append(k)
        out: StepLosses = []
        grads: dict[str, torch.Tensor] = {}
        stepped: dict[str, list[int]] = {n: [] for n in self.model.params}
        for rows in by_composition.values():
            losses, g = self.model.losses_and_grads(rows, [batches[k] for k in rows], epoch, self.device,
                                                    self.members[rows[0]].optim)
            out.append((rows, losses))
            for n, grad in g.items():
                if grad is not None:  # composition groups hold disjoint members: adding exact zeros
                    grads[n] = grad if n not in grads else grads[n] + grad
                    stepped[n].extend(rows)
        self.optimizer.step(grads, {n: np.array(sorted(r), dtype=np.int64) for n, r in stepped.items()}, self.lrs())
        for k in sorted(batches):
            for setup in self.members[k].optim.setups:
                setup.scheduler.step()
        return out

    def state_dict(self) -> dict[str, Any]:
        """The masked optimiser's moments and step counts."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.optimizer.load_state_dict(payload["optimizer"])

    def member_state(self, k: int) -> dict[str, Any]:
        """The member's schedules (its Adam moments are rows of the masked optimiser's)."""
        return {"schedulers": [s.scheduler.state_dict() for s in self.members[k].optim.setups]}

    def load_member_state(self, k: int, saved: dict[str, Any]) -> None:
        """Restore :meth:`member_state`."""
        for setup, sched in zip(self.members[k].optim.setups, saved["schedulers"], strict=True):
            setup.scheduler.load_state_dict(sched)


def member_peak_bytes(spec: TrialSpec) -> int:
    """Peak CUDA memory of one grouped step of ``spec`` alone (its data, weights, Adam state and
    activations) on this process's current device: what ``fuse: auto`` divides free memory by."""
    from mismatch.runtime import select_device

    device = select_device(spec.train.device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    member = build_member(spec, device)
    stepper = GroupedStepper([member], device)
    batch = next(iter(epoch_batches(member.data, 0, spec.train, member.method.uses_unlabelled, member.slices)))
    stepper.step({0: batch}, 0)
    peak = torch.cuda.max_memory_allocated(device) - before
    del stepper, member, batch
    torch.cuda.empty_cache()
    return int(peak)
