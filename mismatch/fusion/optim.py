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
The foreach path (``foreach=True``, the default when every tensor is on CUDA) is torch's
multi-tensor Adam (``_multi_tensor_adam``, non-capturable) op for op: ONE ``torch._foreach_*``
call per op for all tensors of the step. A tensor that every member steps with the same
learning rate and step count is one list entry (a Python scalar per op, torch's own call);
otherwise each stepping member's row ``t[k]`` (a view: the update writes in place, idle rows
are never in a list) is an entry, with its member's scalars as a scalar list.

Which torch Adam it equals: on a CPU, foreach ops run torch's per-tensor fallback, so the two
paths, ``torch.optim.Adam(foreach=True)`` and ``torch.optim.Adam(foreach=False)`` are all
bit-identical per member (tested, tests/fusion/test_masked_adam_foreach.py). On CUDA the
foreach path runs the same foreach kernels as ``Adam(foreach=True)`` (and the per-tensor path
differs from torch in its last op: ``p + (s * m) / d`` with ``s`` a device tensor, where CUDA's
``addcdiv`` computes ``p + s * (m / d)``), so expect last-bit differences between the paths there.
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


def _scalars(values: list[float]) -> float | list[float]:
    """One Python scalar when every list entry shares it (torch's own foreach call), else the list."""
    return values[0] if all(v == values[0] for v in values) else values


class MaskedAdam:
    """Adam over stacked parameters ``{name: (K, ...)}`` where each member steps or idles.

    ``foreach``: update with ``torch._foreach_*`` ops (one call per op for all tensors) or
    tensor by tensor; None picks foreach when every parameter is on CUDA (torch's default).
    """

    def __init__(self, params: dict[str, torch.Tensor], settings: AdamSettings, foreach: bool | None = None) -> None:
        self.params = params
        self.settings = settings
        self.foreach = all(p.is_cuda for p in params.values()) if foreach is None else foreach
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

    def _entries(self, grads: dict[str, torch.Tensor], members: dict[str, np.ndarray], lrs: dict[str, np.ndarray]
                 ) -> tuple[list[list[torch.Tensor]], list[float], list[float]]:
        """Count the step and list what it updates: ([params, grads, exp_avgs, exp_avg_sqs], lrs, steps),
        one entry per whole tensor whose members all step alike, else per stepping member's row."""
        lists: list[list[torch.Tensor]] = [[], [], [], []]
        lr_list: list[float] = []
        step_list: list[float] = []
        for name, grad in grads.items():
            idx = members.get(name)
            if idx is None or len(idx) == 0:
                continue
            tensors = (self.params[name], grad, self.exp_avg[name], self.exp_avg_sq[name])
            self.steps[name][idx] += 1
            lr, step = lrs[name][idx].tolist(), self.steps[name][idx].astype(np.float64).tolist()
            if len(idx) == tensors[0].shape[0] and len(set(lr)) == 1 and len(set(step)) == 1:
                rows: list[int | None] = [None]  # the whole tensor
                lr, step = lr[:1], step[:1]
            else:
                rows = idx.tolist()
            for k in rows:
                for out, t in zip(lists, tensors):
                    out.append(t if k is None else t[k])
            lr_list += lr
            step_list += step
        return lists, lr_list, step_list

    def _step_foreach(self, grads: dict[str, torch.Tensor], members: dict[str, np.ndarray],
                      lrs: dict[str, np.ndarray]) -> None:
        """torch's ``_multi_tensor_adam`` (non-capturable) op for op, per-entry scalars as scalar lists."""
        (params, grad_list, exp_avgs, exp_avg_sqs), lr, step = self._entries(grads, members, lrs)
        if not params:
            return
        s = self.settings
        beta1, beta2 = s.betas
        if s.weight_decay != 0:
            if s.decoupled:
                torch._foreach_mul_(params, _scalars([1 - r * s.weight_decay for r in lr]))
            else:
                grad_list = torch._foreach_add(grad_list, params, alpha=s.weight_decay)
        torch._foreach_lerp_(exp_avgs, grad_list, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grad_list, grad_list, 1 - beta2)
        del grad_list
        step_size = [(r / (1 - beta1**t)) * -1 for r, t in zip(lr, step)]
        bias_correction2_sqrt = [(1 - beta2**t) ** 0.5 for t in step]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, _scalars(bias_correction2_sqrt))
        torch._foreach_add_(denom, s.eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, _scalars(step_size))

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
