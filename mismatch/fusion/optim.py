"""The fused members' optimiser: Adam / AdamW over stacked (K, ...) parameters, with a mask.

Why hand-written: torch's Adam keeps ONE step count per tensor and steps every element of a
tensor that has a gradient, so over a stacked tensor it would give every member the same bias
correction and would move (and decay the moments of) an idle member whose gradient is zero:
Adam with a zero gradient is not a no-op (``exp_avg`` and ``exp_avg_sq`` decay, ``step``
grows, and the parameter moves by the decayed moments). Here every (tensor, member) pair has
its own step count, kept on the host (no device sync to read it), and an update touches only
the rows of the members that stepped: the others' parameters, ``exp_avg``, ``exp_avg_sq``
and step counts stay bit-identical.

Two paths compute the same update. The per-tensor path (the reference) is torch's
single-tensor Adam (``torch.optim.adam._single_tensor_adam``, non-capturable) op for op, with
each member's scalars (learning rate, bias corrections) as a (K, 1, ...) tensor instead of a
Python number: about 10 ops per stacked tensor, ~1000 kernel launches per step for MisMatch.
The foreach path (``foreach=True``, the default when every tensor is on CUDA) issues ONE
``torch._foreach_*`` call per op for all tensors of the step (about 11 calls, a few kernel
launches each). Its list entries are the stacked tensors when every member steps, else views
``t[a:b]`` of the runs of consecutive stepping members (in-place ops write the stacked tensor;
an idle member's rows are in no list). When all stepping members share one learning rate and
step count, the per-member scalars are Python numbers and the calls are torch's multi-tensor
Adam (``_multi_tensor_adam``, non-capturable) op for op. Otherwise (the steady state of a
group whose members' streams differ in length: their step counts part after the first short
epoch) each per-member scalar becomes a tensor per entry (on CUDA shaped like the entry, built
for all entries by one ``repeat_interleave`` from one host-to-device copy, so every call stays
on torch's fast same-shape foreach route; on a CPU a broadcasting column), and the update is
spelt ``p + (s * m) / d`` as in the per-tensor path.

Which torch Adam it equals: on a CPU, foreach ops run torch's per-tensor fallback, so the two
paths, ``torch.optim.Adam(foreach=True)`` and ``torch.optim.Adam(foreach=False)`` are all
bit-identical per member, with members idling and step counts differing
(tests/fusion/test_masked_adam_foreach.py). On CUDA, from the kernels' source and not yet from
a run (no GPU in the session that wrote this): with shared scalars the foreach path runs the
kernels of ``Adam(foreach=True)`` in its order, so it should equal it bit for bit (the CUDA test
in that file checks this); with per-member scalars, and on the per-tensor path, the last op is
``p + (s * m) / d`` where CUDA's ``addcdiv`` computes ``p + s * (m / d)`` (and torch's
single-tensor Adam divides by a CPU scalar as a multiplication by its reciprocal), so expect
last-bit differences from torch there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class AdamSettings:
    """The Adam-family settings shared by every member of a group (one spec's ``train``)."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False  # AdamW


def _column(values: np.ndarray, like: torch.Tensor, cache: dict[Any, torch.Tensor]) -> torch.Tensor:
    """Per-member host scalars as a (G, 1, ..., 1) tensor that broadcasts over ``like`` (G, ...).

    ``cache`` (one per optimiser step) reuses a column: tensors usually share their members'
    step counts and learning rates, so a step copies a few columns to the device, not one per tensor.
    """
    key = (values.tobytes(), len(values), like.ndim, like.dtype, like.device)
    if key not in cache:
        shape = (len(values),) + (1,) * (like.ndim - 1)
        cache[key] = torch.tensor(values, dtype=like.dtype).reshape(shape).to(like.device, non_blocking=True)
    return cache[key]


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    """The stepping members as maximal runs ``[a, b)`` of consecutive indices (views ``t[a:b]``)."""
    idx = np.unique(idx)
    starts = np.flatnonzero(np.diff(idx) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(idx, starts)]


def _fields(values: np.ndarray, counts: list[int], entries: list[torch.Tensor], same_shape: bool
            ) -> list[list[torch.Tensor]]:
    """Per-member scalars ``values`` (C, members of all entries; entry ``e`` has ``counts[e]``)
    as C lists of tensors, one per entry: shaped like the entries when ``same_shape`` (CUDA's
    foreach fast route needs it; one copy to the device and one repeat for all), else (members,
    1, ..., 1) columns that broadcast (a CPU's foreach ops loop over the tensors anyway)."""
    device, dtype = entries[0].device, entries[0].dtype
    host = torch.from_numpy(values).to(dtype)
    if not same_shape:
        chunks = host.to(device).split(counts, dim=1)
        return [[chunk[c].view((n,) + (1,) * (e.ndim - 1)) for chunk, n, e in zip(chunks, counts, entries)]
                for c in range(len(values))]
    repeats = torch.from_numpy(np.repeat([e.numel() // len(e) for e in entries], counts))
    flat = torch.repeat_interleave(host.to(device, non_blocking=True), repeats.to(device, non_blocking=True), dim=1,
                                   output_size=sum(e.numel() for e in entries))  # (C, elements of all entries)
    chunks = flat.split([e.numel() for e in entries], dim=1)
    return [[chunk[c].view(e.shape) for chunk, e in zip(chunks, entries)] for c in range(len(values))]


def _view(t: torch.Tensor, run: tuple[int, int]) -> torch.Tensor:
    """``t[a:b]`` (a view: in-place ops write ``t``), or ``t`` itself when the run is every member."""
    a, b = run
    return t if (a, b) == (0, t.shape[0]) else t[a:b]


class MaskedAdam:
    """Adam over stacked parameters ``{name: (K, ...)}`` where each member steps or idles.

    ``foreach``: update with ``torch._foreach_*`` ops (one call per op for all tensors) or
    tensor by tensor; None picks foreach when every parameter is on CUDA (torch's default).
    """

    def __init__(self, params: dict[str, torch.Tensor], settings: AdamSettings, foreach: bool | None = None) -> None:
        self.params = params
        self.settings = settings
        self.foreach = all(p.is_cuda for p in params.values()) if foreach is None else foreach
        self._same_shape_scalars = any(p.is_cuda for p in params.values())  # see _fields
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        k = next(iter(params.values())).shape[0]
        self.steps = {n: np.zeros(k, dtype=np.int64) for n in params}  # per tensor, per member

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor], members: dict[str, np.ndarray], lrs: dict[str, np.ndarray]) -> None:
        """Step tensor ``name`` for the members ``members[name]`` (indices) with gradient
        ``grads[name]`` (K, ...) at learning rates ``lrs[name]`` (K,); nothing else changes."""
        if self.foreach:
            self._step_foreach(grads, members, lrs)
            return
        cache: dict[Any, torch.Tensor] = {}
        for name, grad in grads.items():
            idx = members.get(name)
            if idx is None or len(idx) == 0:
                continue
            self._step_tensor(name, grad, idx, lrs[name][idx], cache)

    def _plan(self, grads: dict[str, torch.Tensor], members: dict[str, np.ndarray]
              ) -> list[tuple[str, torch.Tensor, tuple[int, int]]]:
        """Count the step; the entries it updates: (name, gradient, members ``[a, b)``), the whole
        tensor when every member steps."""
        plan = []
        for name, grad in grads.items():
            idx = members.get(name)
            if idx is None or len(idx) == 0:
                continue
            self.steps[name][idx] += 1
            plan += [(name, grad, run) for run in _runs(idx)]
        return plan

    def _step_foreach(self, grads: dict[str, torch.Tensor], members: dict[str, np.ndarray],
                      lrs: dict[str, np.ndarray]) -> None:
        """torch's ``_multi_tensor_adam`` (non-capturable) op for op when the stepping members
        share one lr and step count; else the per-member scalars as tensors (the per-tensor path's ops)."""
        plan = self._plan(grads, members)
        if not plan:
            return
        s = self.settings
        beta1, beta2 = s.betas
        params, exp_avgs, exp_avg_sqs = ([_view(state[name], run) for name, _, run in plan]
                                         for state in (self.params, self.exp_avg, self.exp_avg_sq))
        grad_list = [_view(grad, run) for _, grad, run in plan]
        lr = np.concatenate([lrs[name][a:b] for name, _, (a, b) in plan])  # per member of every entry
        step = np.concatenate([self.steps[name][a:b] for name, _, (a, b) in plan]).astype(np.float64)
        scalars = np.stack([1 - lr * s.weight_decay, (1 - beta2**step) ** 0.5, -(lr / (1 - beta1**step))])
        shared = bool((lr == lr[0]).all() and (step == step[0]).all())
        if shared:  # Python numbers: torch's own calls
            decay, bias_correction2_sqrt, step_size = scalars[:, 0].tolist()
        else:
            decay, bias_correction2_sqrt, step_size = _fields(scalars, [b - a for *_, (a, b) in plan], params,
                                                              self._same_shape_scalars)
        if s.weight_decay != 0:
            if s.decoupled:
                torch._foreach_mul_(params, decay)
            else:
                grad_list = torch._foreach_add(grad_list, params, alpha=s.weight_decay)
        torch._foreach_lerp_(exp_avgs, grad_list, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grad_list, grad_list, 1 - beta2)
        del grad_list
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, s.eps)
        if shared:
            torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)
        else:  # addcdiv's value must be a number: its CPU arithmetic, p + (s * m) / d, spelt out
            update = torch._foreach_mul(exp_avgs, step_size)
            torch._foreach_div_(update, denom)
            torch._foreach_add_(params, update)

    def _step_tensor(self, name: str, grad: torch.Tensor, idx: np.ndarray, lr: np.ndarray,
                     cache: dict[Any, torch.Tensor]) -> None:
        s = self.settings
        beta1, beta2 = s.betas
        param, exp_avg, exp_avg_sq = self.params[name], self.exp_avg[name], self.exp_avg_sq[name]
        everyone = len(idx) == param.shape[0]
        rows = None if everyone else torch.as_tensor(idx, device=param.device)
        p = param if everyone else param[rows]  # a gathered copy; written back below
        m = exp_avg if everyone else exp_avg[rows]
        v = exp_avg_sq if everyone else exp_avg_sq[rows]
        g = grad if everyone else grad[rows]
        self.steps[name][idx] += 1
        step = self.steps[name][idx].astype(np.float64)
        if s.weight_decay != 0:
            if s.decoupled:
                p.mul_(_column(1 - lr * s.weight_decay, p, cache))
            else:
                g = g.add(p, alpha=s.weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = (v.sqrt() / _column(bias_correction2_sqrt, v, cache)).add_(s.eps)
        # torch: param.addcdiv_(exp_avg, denom, value=-step_size), i.e. param + (value * exp_avg) / denom
        p.add_(_column(-step_size, p, cache) * m / denom)
        if not everyone:
            param.index_copy_(0, rows, p)
            exp_avg.index_copy_(0, rows, m)
            exp_avg_sq.index_copy_(0, rows, v)

    def state_dict(self) -> dict[str, Any]:
        """Moments and step counts (plain tensors), for the group's checkpoint."""
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq,
                "steps": {n: torch.from_numpy(s.copy()) for n, s in self.steps.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        with torch.no_grad():
            for n in self.params:
                self.exp_avg[n].copy_(state["exp_avg"][n])
                self.exp_avg_sq[n].copy_(state["exp_avg_sq"][n])
                self.steps[n] = state["steps"][n].numpy().copy()
