"""Loss values on known tensors."""

import pytest
import torch

from mismatch.losses import soft_dice_loss, symmetric_mse


def test_soft_dice_known_values():
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert soft_dice_loss(target, target).item() == pytest.approx(0.0)
    prob = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]]])
    # 1 - (2 * 1 + 1) / (2 + 2 + 1)
    assert soft_dice_loss(prob, target).item() == pytest.approx(1 - 3 / 5)
    # smoothing 1 keeps an all-empty pair at zero loss
    assert soft_dice_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(0.0)


def test_symmetric_mse_is_twice_mse_and_grads_both_sides():
    p1 = torch.tensor([0.2, 0.8], requires_grad=True)
    p2 = torch.tensor([0.4, 0.4], requires_grad=True)
    loss = symmetric_mse(p1, p2)
    assert loss.item() == pytest.approx(2 * (0.04 + 0.16) / 2)
    loss.backward()
    assert p1.grad is not None and p2.grad is not None
    torch.testing.assert_close(p1.grad, -p2.grad)
