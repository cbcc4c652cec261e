"""Fusion's parts below the trial: which trials may train as one fused group and how groups
are planned (:mod:`mismatch.fusion.support`, torch-free), and the members' masked Adam
(:mod:`mismatch.fusion.optim`). The grouped stepper that trains a group through the one loop
is :mod:`mismatch.trial.fused`; docs/studies.md has the measurements.
"""

from __future__ import annotations

from mismatch.fusion.support import NOT_FUSABLE, check_group, group_key, plan_groups, trial_fusable

__all__ = ["NOT_FUSABLE", "check_group", "group_key", "plan_groups", "trial_fusable"]
