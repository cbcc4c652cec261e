"""UA-MT: the entropy threshold follows its ramp, and the mask keeps only certain pixels."""

import json
import math

import pytest
import torch
from tiny import tiny_batch, tiny_method

from mismatch.config import load_trial_spec
from mismatch.methods.mean_teacher import sigmoid_rampup
from mismatch.methods.ua_mt import binary_entropy, certainty_mask, masked_mse, uncertainty_threshold
from mismatch.trial.run import run_trial


def test_threshold_ramps_from_three_quarters_to_all_of_ln2():
    assert uncertainty_threshold(0, 10) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(2))
    assert uncertainty_threshold(5, 10) == pytest.approx((0.75 + 0.25 * math.exp(-1.25)) * math.log(2))
    assert uncertainty_threshold(10, 10) == pytest.approx(math.log(2))
    assert uncertainty_threshold(30, 10) == pytest.approx(math.log(2))
    assert uncertainty_threshold(0, 10, start=0.5) == pytest.approx((0.5 + 0.5 * math.exp(-5)) * math.log(2))


def test_threshold_ramp_defaults_to_the_run_length():
    method = tiny_method("ua-mt")
    method.run_epochs = 20
    assert method.threshold(10) == pytest.approx(uncertainty_threshold(10, 20))
    assert method.consistency_weight(10) == pytest.approx(0.1 * sigmoid_rampup(10, 20))
    method = tiny_method("ua-mt", threshold_rampup_epochs=4, rampup_epochs=8)
    assert method.threshold(2) == pytest.approx(uncertainty_threshold(2, 4))
    assert method.consistency_weight(2) == pytest.approx(0.1 * sigmoid_rampup(2, 8))


def test_binary_entropy_known_values():
    p = torch.tensor([0.5, 0.0, 1.0, 0.1])
    h = binary_entropy(p)
    assert h[0] == pytest.approx(math.log(2), abs=1e-5)
    assert h[1] == pytest.approx(0.0, abs=1e-5) and h[2] == pytest.approx(0.0, abs=1e-5)
    assert h[3] == pytest.approx(-(0.1 * math.log(0.1) + 0.9 * math.log(0.9)), abs=1e-5)


def test_mask_keeps_only_pixels_below_the_threshold():
    entropy = torch.tensor([0.1, 0.5, 0.52, 0.6, 0.69])
    mask = certainty_mask(entropy, 0.52)
    assert mask.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    student, teacher = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), torch.zeros(5)
    assert masked_mse(student, teacher, mask).item() == pytest.approx((1 + 4) / 2)


def test_consistency_counts_only_pixels_where_the_teacher_is_certain():
    torch.manual_seed(0)
    method = tiny_method("ua-mt", alpha=1.0, rampup_epochs=0, threshold_rampup_epochs=0, noise_std=0.0, dropout=0.0)
    with torch.no_grad():  # teacher and student differ
        for p in method.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = tiny_batch([False, False], seed=1)
    entropy = torch.zeros(2, 1, 16, 16)
    entropy[..., 8:] = 0.9  # right half uncertain (above ln 2 >= any threshold)
    method.teacher_entropy = lambda image: entropy
    losses = method.training_step(batch, epoch=0)
    with torch.no_grad():
        student = torch.sigmoid(method.student(batch.image)[0])
        teacher = torch.sigmoid(method.teacher(batch.image)[0])
    left = (student - teacher)[..., :8]
    assert torch.mean(left**2).item() > 0 and torch.mean((student - teacher)[..., 8:] ** 2).item() > 0
    assert losses["consistency"].item() == pytest.approx(torch.mean(left**2).item(), rel=1e-5)
    assert losses["certain_fraction"].item() == 0.5
    method.threshold = lambda epoch: 0.0  # nothing is certain: no consistency at all
    losses = method.training_step(batch, epoch=0)
    assert losses["consistency"].item() == 0.0 and losses["certain_fraction"].item() == 0.0


def test_teacher_entropy_uses_t_stochastic_passes():
    torch.manual_seed(0)
    method = tiny_method("ua-mt", passes=8, noise_std=0.0, dropout=0.0)
    image = tiny_batch([False], seed=2).image
    method.eval()  # no dropout, no noise: every pass is the same, so the entropy is one pass's
    expected = binary_entropy(torch.sigmoid(method.teacher(image)[0]))
    torch.testing.assert_close(method.teacher_entropy(image), expected)
    method = tiny_method("ua-mt", passes=8, dropout=0.5)
    method.train()
    torch.manual_seed(1)
    a = method.teacher_entropy(image)
    torch.manual_seed(2)
    assert not torch.equal(a, method.teacher_entropy(image))  # dropout and noise are drawn


def test_teacher_gets_no_gradient_and_student_gets_one_everywhere():
    torch.manual_seed(0)
    method = tiny_method("ua-mt", rampup_epochs=0)
    method.train()
    losses = method.training_step(tiny_batch([True, False], seed=3), epoch=3)
    losses["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in method.student.parameters())


def test_trains_with_the_one_loop_twice_identically(tiny_dict):
    spec = load_trial_spec(tiny_dict(method={"name": "ua-mt", "width": 4}))
    first, second = run_trial(spec), run_trial(spec)
    row = first.trial
    assert row["method"] == "ua-mt" and row["model"] == "unet" and row["params"] > 0
    assert all(math.isfinite(v) for v in json.loads(row["final_losses_json"]).values())
    assert row["unlabelled_slices"] > 0
    assert first.images.equals(second.images)
