"""A fused group gives each member the rows of its trial trained alone (CPU).

On the default kernels a CPU group steps its members one by one (``kernels: auto`` is
``per-member`` there), and its rows equal the trials alone exactly. The grouped (vmapped)
stepper, the one a GPU uses, is tested here on a CPU too. Its tolerance: on the CPU, torch
picks oneDNN for a trial's convolutions but its native kernels
for the grouped convolutions of a fused step; the two differ by float32 rounding, which
Adam amplifies for parameters whose gradients are rounding noise (a bias-free convolution
before InstanceNorm). The equivalence tests therefore run solo and fused trials on the same
(native) kernels, where the rows agree to 1e-4 in IoU; the residual is the reordering of
sums inside a grouped vs a plain convolution (docs/studies.md gives the figures).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mismatch.config import load_trial_spec
from mismatch.trial.run import run_group, run_trial

IOU_TOL = 1e-4
# fold, labelled slices, alpha, seed, unlabelled pool: three stream lengths (4, 3 and 2 steps
# of batch 2) whose last batches differ in composition, so steps are masked and split
MEMBERS = [(0, 2, 0.002, 0, None), (1, 3, 0.01, 1, 5), (2, 4, 0.05, 2, 3)]


class Stop(Exception):
    """Raised from the epoch hook, as a killed worker would stop the group."""


def _specs(tiny_dict, epochs: int = 1):
    return [load_trial_spec(tiny_dict(
        data={"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 4, "seed": 0}},
        protocol={"fold": f, "labelled_slices": n, "unlabelled_slices": pool},
        method={"alpha": a},
        train={"stream": "two-stream", "seed": s, "batch_size": 2, "epochs": epochs}))
        for f, n, a, s, pool in MEMBERS]


@pytest.fixture
def native_kernels():
    """Solo and fused trials on the same convolution kernels (see the module docstring)."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def test_on_the_default_cpu_kernels_a_group_gives_exactly_the_rows_of_its_trials_alone(tiny_dict):
    specs = _specs(tiny_dict, epochs=2)
    fused = run_group(specs)  # kernels auto: per-member on a CPU, oneDNN as a trial alone uses
    for spec, member in zip(specs, fused, strict=True):
        solo = run_trial(spec)
        for table in ("images", "epochs"):
            a, b = getattr(member, table), getattr(solo, table)
            assert list(a.columns) == list(b.columns)
            cols = [c for c in a.columns if c not in ("time_s",)]
            pd.testing.assert_frame_equal(a[cols], b[cols])
        for key in ("params", "optimizer_steps", "labelled_presentations", "final_loss", "best_val_iou"):
            assert member.trial[key] == solo.trial[key], key
    assert [m.trial["optimizer_steps"] for m in fused] == [8, 6, 4]


def test_grouped_members_get_the_rows_of_their_trials_alone(tiny_dict, native_kernels):
    specs = _specs(tiny_dict)
    fused = run_group(specs, kernels="grouped")
    for spec, member in zip(specs, fused):
        solo = run_trial(spec)
        assert member.trial["trial_id"] == solo.trial["trial_id"] == spec.trial_id()
        for key in ("fold", "alpha", "labelled_slices", "unlabelled_slices", "optimizer_steps",
                    "labelled_presentations", "epochs", "n_test_images"):
            assert member.trial[key] == solo.trial[key], key
        assert list(member.images.columns) == list(solo.images.columns)
        gap = np.abs(member.images["iou"].to_numpy() - solo.images["iou"].to_numpy()).max()
        print(f"{spec.trial_id()}: max |IoU fused - alone| = {gap:.1e}")  # the tolerance reached (pytest -s)
        assert gap <= IOU_TOL
        np.testing.assert_allclose(member.epochs["loss_loss"], solo.epochs["loss_loss"], rtol=1e-4)
    assert [m.trial["optimizer_steps"] for m in fused] == [4, 3, 2]  # stream lengths of the three pools


def test_cps_members_get_the_rows_of_their_trials_alone(tiny_dict, native_kernels):
    specs = [spec.model_copy(update={"method": load_trial_spec(tiny_dict(method={"name": "cps", "width": 4})).method})
             for spec in _specs(tiny_dict)[:2]]
    for spec, member in zip(specs, run_group(specs, kernels="grouped")):
        solo = run_trial(spec)
        assert member.trial["trial_id"] == solo.trial["trial_id"]
        np.testing.assert_allclose(member.images["iou"], solo.images["iou"], atol=IOU_TOL, rtol=0)


@pytest.mark.slow  # seconds of training: CI runs it, the developer loop leaves it out
def test_a_killed_group_resumes_every_member_with_the_same_rows(tiny_dict, tmp_path):
    specs = _specs(tiny_dict, epochs=2)[:2]
    whole = run_group(specs, kernels="grouped")

    def stop(member: int, report) -> None:
        if report.epoch == 0 and member == 1:
            raise Stop

    with pytest.raises(Stop):
        run_group(specs, kernels="grouped", checkpoint_dir=tmp_path, on_epoch_end=stop)
    resumed = run_group(specs, kernels="grouped", checkpoint_dir=tmp_path)
    for a, b in zip(whole, resumed):
        assert b.trial["resumed_from_epoch"] == 1 and b.trial["epochs"] == 2
        assert a.trial["optimizer_steps"] == b.trial["optimizer_steps"]
        np.testing.assert_array_equal(a.images["iou"], b.images["iou"])
        np.testing.assert_array_equal(a.epochs["loss_loss"], b.epochs["loss_loss"])


def test_a_member_with_a_non_finite_loss_fails_alone(tiny_dict, monkeypatch):
    from mismatch.methods.mismatch import MisMatch
    from mismatch.trial.state import NonFiniteLossError

    original = MisMatch.training_step

    def poisoned(self, batch, epoch):  # NaN consistency for the member with alpha 0.01 only
        losses = original(self, batch, epoch)
        bad = torch.as_tensor(self.config.alpha) == torch.tensor(0.01)
        factor = torch.where(bad, torch.tensor(float("nan")), torch.tensor(1.0))  # a constant: no NaN gradient elsewhere
        losses["consistency"] = losses["consistency"] * factor
        losses["loss"] = losses["dice"] + losses["consistency"]
        return losses

    monkeypatch.setattr(MisMatch, "training_step", poisoned)
    specs = _specs(tiny_dict)[:2]
    fused = run_group(specs, kernels="grouped")
    with pytest.raises(NonFiniteLossError) as alone:
        run_trial(specs[1])
    assert isinstance(fused[1], NonFiniteLossError) and str(fused[1]) == str(alone.value)
    assert fused[0].trial["optimizer_steps"] == 4 and np.isfinite(fused[0].trial["final_loss"])
