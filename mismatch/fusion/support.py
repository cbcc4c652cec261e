"""Which trials can train fused, and which trials may share a group (torch-free).

A fused group trains K trials of one method, network and input shape as one model
(:func:`mismatch.trial.run.run_group`). Members may differ only in the per-trial settings of
:data:`MEMBER_FIELDS` and in a method's float settings (alpha, ...), which reach the fused
step as one value per member; every other setting is part of the group key.

A method is fusable when its config's ``fusable`` class attribute is true (the default on
:class:`~mismatch.config.MethodConfig`) and it has no entry in :data:`NOT_FUSABLE`, which
says for each built-in method why it trains one trial per process.
"""

from __future__ import annotations

import json
from typing import Any

from mismatch.config import TrialSpec

#: Settings in which the members of one group may differ (section, key).
MEMBER_FIELDS: tuple[tuple[str, str], ...] = (
    ("protocol", "fold"), ("protocol", "labelled_slices"), ("protocol", "unlabelled_slices"),
    ("protocol", "label_draw"), ("protocol", "split_seed"), ("train", "seed"),
)

_PYTHON_RANDOM = "draws random numbers on the host (float(torch.rand(())) decides augmentations), which vmap cannot batch"
_SHARED_RANDOM = ("runs under vmap, but its random draws would come from one generator for all members, so its rows "
                  "would equal its trial alone only statistically; it trains alone so that rows stay reproducible")
_EMA = "updates an EMA teacher in after_step, in place, outside the fused step"

#: Built-in methods that train one trial per process, and why (checked by the fusion tests).
NOT_FUSABLE: dict[str, str] = {
    "sup1": f"random flips: {_PYTHON_RANDOM}",
    "sup2": f"random flips: {_PYTHON_RANDOM}",
    "sup-strong": f"{_PYTHON_RANDOM}; its own optimiser settings per network part",
    "mean-teacher": _EMA,
    "ua-mt": _EMA,
    "bcp": f"{_EMA}; copy-paste boxes {_PYTHON_RANDOM}",
    "fixmatch": f"strong augmentation {_PYTHON_RANDOM}",
    "unimatch": f"strong augmentation {_PYTHON_RANDOM}",
    "mta": "alternates segmentation and reconstruction steps with a Python counter on the module, which a "
           "masked (idle) member must not advance",
    "morph": f"Gaussian input noise: {_SHARED_RANDOM}",
    "cct": f"spatial dropout and feature noise: {_SHARED_RANDOM}",
}


def method_fusable(spec: TrialSpec) -> str | None:
    """Why ``spec``'s method cannot train fused, or ``None`` if it can."""
    cfg = spec.method
    if not getattr(type(cfg), "fusable", True):
        return f"method {cfg.name} says fusable = False"
    return NOT_FUSABLE.get(cfg.name)


def trial_fusable(spec: TrialSpec) -> str | None:
    """Why ``spec`` trains alone (one trial per process), or ``None`` if it can be fused."""
    reason = method_fusable(spec)
    if reason:
        return f"method {spec.method.name}: {reason}"
    train = spec.train
    if train.stream != "two-stream":
        return ("stream: streaming (the paper's) gives each step a different mix of labelled and "
                "unlabelled slices; fused members need the same batch composition (use two-stream)")
    if train.optimizer not in ("adam", "adamw"):
        return f"optimizer: {train.optimizer} (the fused optimiser is the Adam family's)"
    if train.precision == "fp16":
        return "precision: fp16 needs one gradient scaler per member"
    if train.clip_grad_norm is not None:
        return "clip_grad_norm: per-member clipping is not implemented in the fused step"
    return None


def _float_fields(cfg: dict[str, Any]) -> set[str]:
    return {k for k, v in cfg.items() if isinstance(v, float)}


def group_key(spec: TrialSpec) -> str:
    """Trials with equal keys may train in one fused group: the spec without its member
    fields and without its method's float settings (those reach the step per member)."""
    data = spec.model_dump(mode="json")
    data.pop("study", None)
    for section, key in MEMBER_FIELDS:
        data[section].pop(key, None)
    for key in _float_fields(data["method"]):
        data["method"].pop(key)
    return json.dumps(data, sort_keys=True)


def member_scalars(specs: list[TrialSpec]) -> list[str]:
    """The float method settings whose values differ between ``specs`` (alpha, ...)."""
    cfgs = [s.method.model_dump() for s in specs]
    return sorted(k for k in _float_fields(cfgs[0]) if len({c[k] for c in cfgs}) > 1)


def check_group(specs: list[TrialSpec]) -> None:
    """Raise ``ValueError`` unless ``specs`` can train as one fused group."""
    if not specs:
        raise ValueError("a fused group needs at least one trial")
    for spec in specs:
        reason = trial_fusable(spec)
        if reason:
            raise ValueError(f"trial {spec.trial_id()} cannot be fused: {reason}")
    keys = {group_key(s) for s in specs}
    if len(keys) > 1:
        raise ValueError("fused trials must share method, network, data and training settings; they may differ "
                         "only in fold, seed, labelled count, label draw and float method settings")


def plan_groups(specs: list[TrialSpec], fuse: int) -> list[list[int]]:
    """Indices of ``specs`` in groups of at most ``fuse`` compatible trials (in order); a
    trial that cannot be fused is a group of its own."""
    groups: list[list[int]] = []
    open_by_key: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        if fuse <= 1 or trial_fusable(spec):
            groups.append([i])
            continue
        key = group_key(spec)
        group = open_by_key.get(key)
        if group is None or len(group) >= fuse:
            group = open_by_key[key] = []
            groups.append(group)
        group.append(i)
    return groups
