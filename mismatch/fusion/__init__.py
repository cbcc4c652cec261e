"""Fused trials (horizontal fusion): same-architecture trials trained as one model.

:func:`train_fused` (torch) trains a group; :mod:`mismatch.fusion.support` (torch-free)
says which trials may be fused and plans the groups. docs/studies.md has the measurements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mismatch.fusion.support import NOT_FUSABLE, check_group, group_key, plan_groups, trial_fusable

if TYPE_CHECKING:
    from mismatch.fusion.engine import MemberOutcome, train_fused

__all__ = ["NOT_FUSABLE", "MemberOutcome", "check_group", "group_key", "plan_groups", "train_fused", "trial_fusable"]


def __getattr__(name: str) -> Any:
    """The torch engine loads on first use, so planning groups stays torch-free."""
    if name in ("train_fused", "MemberOutcome", "FusedModel"):
        from mismatch.fusion import engine

        return getattr(engine, name)
    raise AttributeError(name)
