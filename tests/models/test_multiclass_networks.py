"""2D networks with C output channels: shapes, parameter counts, softmax probabilities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mismatch.models import build_model

TWO_D = ["mm", "mm-a", "mm-b", "mm-c", "unet"]
TINY = dict(in_channels=2, width=4)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", TWO_D)
def test_every_decoder_outputs_out_channels(name: str) -> None:
    model = build_model(name, **TINY, out_channels=4)
    logits = model(torch.randn(2, 2, 16, 16))
    assert len(logits) == model.num_decoders
    assert all(out.shape == (2, 4, 16, 16) for out in logits)


@pytest.mark.parametrize("name", TWO_D)
def test_out_channels_adds_only_head_weights(name: str) -> None:
    # each decoder's 1x1 head grows from (w + 1) to C (w + 1) parameters; nothing else changes
    width, classes = 24, 4
    binary = build_model(name, in_channels=1, width=width)
    multi = build_model(name, in_channels=1, width=width, out_channels=classes)
    assert n_params(multi) - n_params(binary) == binary.num_decoders * (classes - 1) * (width + 1)
    assert n_params(build_model(name, in_channels=1, width=width, out_channels=1)) == n_params(binary)


@pytest.mark.parametrize("name", TWO_D)
def test_probabilities_are_mean_of_decoder_softmaxes(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, **TINY, out_channels=3)
    x = torch.randn(1, 2, 16, 24)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(z, dim=1) for z in model(x)]).mean(0)
        probs = model.probabilities(x)
    assert probs.shape == (1, 3, 16, 24)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(1, 16, 24))


def test_binary_probabilities_unchanged_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = build_model("mm", **TINY)
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        old = torch.sigmoid(torch.stack(model(x))).mean(dim=0)  # the pre-multi-class formula
        assert torch.equal(model.probabilities(x), old)


def test_multiclass_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = build_model("mm", **TINY, out_channels=4)
    label = torch.randint(0, 4, (2, 16, 16))
    loss = sum(nn.functional.cross_entropy(z, label) for z in model(torch.randn(2, 2, 16, 16)))
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname
