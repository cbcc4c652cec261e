"""The shared loss helpers for C classes, against hand-computed values; C = 2 is today's path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mismatch.losses import (
    confidence,
    cross_entropy,
    dice_loss,
    entropy,
    hard_labels,
    one_hot,
    out_channels_for,
    probabilities,
    soft_dice_loss,
)


def test_out_channels_one_for_binary_else_classes() -> None:
    assert [out_channels_for(c) for c in (2, 3, 4)] == [1, 3, 4]
    with pytest.raises(ValueError, match="at least 2 classes"):
        out_channels_for(1)


def test_probabilities_sigmoid_for_one_channel_softmax_otherwise() -> None:
    one = torch.tensor([[[[0.0, math.log(3.0)]]]])  # (1, 1, 1, 2)
    torch.testing.assert_close(probabilities(one), torch.tensor([[[[0.5, 0.75]]]]))
    logits = torch.log(torch.tensor([1.0, 2.0, 5.0])).view(1, 3, 1, 1)
    torch.testing.assert_close(probabilities(logits).flatten(), torch.tensor([0.125, 0.25, 0.625]))


def test_multiclass_dice_loss_hand_computed() -> None:
    # two pixels, labels 0 and 2; per class (smooth 1): class 0 -> 0, class 1 -> 1/3, class 2 -> 0.2
    prob = torch.tensor([[1.0, 0.0], [0.0, 0.5], [0.0, 0.5]]).view(1, 3, 1, 2)
    label = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
    assert dice_loss(prob, label).item() == pytest.approx((0 + 1 / 3 + 0.2) / 3)


def test_multiclass_dice_is_per_image_then_averaged() -> None:
    prob = torch.tensor([[1.0, 0.0], [0.0, 0.5], [0.0, 0.5]]).view(1, 3, 1, 2)
    label = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
    perfect = one_hot(label, 3)
    both = dice_loss(torch.cat([prob, perfect]), torch.cat([label, label]))
    assert both.item() == pytest.approx((0 + 1 / 3 + 0.2) / 6)


def test_binary_dice_is_todays_function_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    prob = torch.rand(3, 1, 8, 8, generator=g)
    label = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    assert torch.equal(dice_loss(prob, label), soft_dice_loss(prob, label))


def test_one_hot_moves_classes_to_dim_one_in_2d_and_3d() -> None:
    label = torch.tensor([0.0, 1.0, 3.0]).view(1, 1, 1, 1, 3)  # (B, 1, D, H, W)
    out = one_hot(label, 4)
    assert out.shape == (1, 4, 1, 1, 3) and out.dtype == label.dtype
    assert out[0, :, 0, 0, 2].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert torch.equal(out.sum(dim=1), torch.ones(1, 1, 1, 3))


def test_hard_labels_and_confidence() -> None:
    binary = torch.tensor([0.2, 0.5, 0.9]).view(1, 1, 1, 3)
    assert hard_labels(binary).flatten().tolist() == [0.0, 0.0, 1.0]  # prob > 0.5
    torch.testing.assert_close(confidence(binary).flatten(), torch.tensor([0.8, 0.5, 0.9]))
    prob = torch.tensor([[0.1, 0.6], [0.7, 0.1], [0.2, 0.3]]).view(1, 3, 1, 2)
    assert hard_labels(prob).shape == (1, 1, 1, 2)
    assert hard_labels(prob).flatten().tolist() == [1.0, 0.0]
    torch.testing.assert_close(confidence(prob).flatten(), torch.tensor([0.7, 0.6]))


def test_cross_entropy_hand_computed_and_binary_unchanged() -> None:
    logits = torch.log(torch.tensor([1.0, 2.0, 5.0])).view(1, 3, 1, 1)
    label = torch.tensor([2.0]).view(1, 1, 1, 1)
    assert cross_entropy(logits, label).item() == pytest.approx(-math.log(0.625))
    assert cross_entropy(logits, label, reduction="none").shape == (1, 1, 1, 1)
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(2, 1, 4, 4, generator=g), (torch.rand(2, 1, 4, 4, generator=g) > 0.5).float()
    assert torch.equal(cross_entropy(z, y), F.binary_cross_entropy_with_logits(z, y))


def test_entropy_is_ln_c_at_uniform_and_binary_formula_for_one_channel() -> None:
    uniform = torch.full((1, 4, 2, 2), 0.25)
    torch.testing.assert_close(entropy(uniform, eps=0.0), torch.full((1, 1, 2, 2), math.log(4.0)))
    half = torch.full((1, 1, 2, 2), 0.5)
    torch.testing.assert_close(entropy(half, eps=0.0), torch.full((1, 1, 2, 2), math.log(2.0)))
