"""Mean Teacher: the teacher follows the student by the EMA rule and gets no gradient."""

import math

import pytest
import torch
from tiny import tiny_batch, tiny_method

from mismatch.methods.mean_teacher import sigmoid_rampup
from mismatch.models import build_model


def _method(**settings):
    return tiny_method('mean-teacher', **settings)


def _batch(labelled):
    return tiny_batch(labelled, seed=3)


def test_teacher_moves_toward_student_by_exactly_the_ema_rule_and_gets_no_gradient():
    torch.manual_seed(0)
    method = _method(ema_decay=0.9)
    with torch.no_grad():  # make teacher and student differ before the step
        for p in method.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    t0 = [p.detach().clone() for p in method.teacher.parameters()]
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    losses = method.training_step(_batch([True, False]), epoch=3)
    losses["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(not p.requires_grad for p in method.teacher.parameters())
    optimizer.step()
    method.after_step()
    s1 = [p.detach() for p in method.student.parameters()]
    for t, t_0, s in zip(method.teacher.parameters(), t0, s1):
        torch.testing.assert_close(t, 0.9 * t_0 + 0.1 * s, rtol=1e-6, atol=1e-8)  # float32 rounding only
    assert any(not torch.equal(t, t_0) for t, t_0 in zip(method.teacher.parameters(), t0))


def test_teacher_starts_as_a_copy_of_the_student():
    method = _method()
    for t, s in zip(method.teacher.parameters(), method.student.parameters()):
        assert torch.equal(t, s) and t.data_ptr() != s.data_ptr()


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(10, 10) == 1.0 and sigmoid_rampup(40, 10) == 1.0
    assert sigmoid_rampup(0, 0) == 1.0


def test_consistency_is_ramped_mse_to_the_teacher_on_unlabelled_slices_only():
    method = _method(alpha=2.0, rampup_epochs=4, noise_std=0.0)
    batch = _batch([True, False])
    losses = method.training_step(batch, epoch=2)
    student = torch.sigmoid(method.student(batch.image[1:])[0])
    teacher = torch.sigmoid(method.teacher(batch.image[1:])[0])
    expected = 2.0 * sigmoid_rampup(2, 4) * torch.mean((student - teacher) ** 2)
    torch.testing.assert_close(losses["consistency"], expected)
    assert set(method.training_step(_batch([True]), epoch=0)) == {"dice", "loss"}


@pytest.mark.parametrize("predict_with", ["teacher", "student"])
def test_prediction_network_and_test_time_parameters(predict_with):
    method = _method(predict_with=predict_with).eval()
    with torch.no_grad():
        for p in method.teacher.parameters():
            p.add_(0.1)
    x = torch.randn(1, 1, 16, 16)
    net = getattr(method, predict_with)
    torch.testing.assert_close(method.predict_proba(x), torch.sigmoid(net(x)[0]))
    unet = build_model("unet", in_channels=1, width=4)
    assert method.inference_parameters() == sum(p.numel() for p in unet.parameters())
    assert method.model_name == "unet"
