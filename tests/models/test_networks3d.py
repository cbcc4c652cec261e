"""3D networks on tiny volumes (width 4, 16 x 16 x 32, two input channels) and pinned counts."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from mismatch.models import build_model, list_models, network_card
from mismatch.models.blocks3d import PASB3d
from mismatch.models.networks3d import Encoder3d, check_input_3d

NAMES_3D = ["mm3d", "mm3d-a", "mm3d-b", "mm3d-c", "unet3d"]
TINY = dict(in_channels=2, width=4)
# 16 x 16 x 32: the smallest volume whose 1/16 level keeps > 1 voxel for InstanceNorm.
TINY_SHAPE = (2, 2, 16, 16, 32)

# Counts at width 16 (the 3D default), one input channel: one logit, and four classes (each
# decoder's 1x1x1 head gains 3 x (16 + 1) parameters).
PARAMETER_COUNTS = {
    "unet3d": (10_026_849, 10_026_900),
    "mm3d": (14_215_178, 14_215_280),
    "mm3d-a": (12_986_226, 12_986_328),
    "mm3d-b": (13_605_378, 13_605_480),
    "mm3d-c": (13_596_026, 13_596_128),
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_3d_cards_mirror_their_2d_counterparts() -> None:
    assert sorted(n for n in list_models() if network_card(n).spatial_dims == 3) == NAMES_3D
    for name in NAMES_3D:
        card, twin = network_card(name), network_card(name.replace("3d", ""))
        assert (card.decoders, card.decoder_blocks, card.accepts) == (twin.decoders, twin.decoder_blocks, twin.accepts)
        assert card.default_width == 16 and twin.spatial_dims == 2
    assert network_card("mm3d").provides({"decoders": 2, "spatial_dims": 3})


@pytest.mark.parametrize("name", NAMES_3D)
@pytest.mark.parametrize("out_channels", [1, 4])
def test_parameter_counts(name: str, out_channels: int) -> None:
    model = build_model(name, in_channels=1, width=16, out_channels=out_channels)
    assert n_params(model) == PARAMETER_COUNTS[name][out_channels > 1]


CASES = [(name, {}) for name in NAMES_3D] + [
    ("mm3d", {"negative_sigmoid": True}),
    ("mm3d", {"out_channels": 4}),
    ("unet3d", {"out_channels": 4}),
]


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}-{'-'.join(map(str, k.values())) or 'default'}" for n, k in CASES])
def test_forward_backward_every_parameter_learns(name: str, kwargs: dict) -> None:
    # A random-weighted loss: a spatially constant upstream gradient is annihilated by
    # InstanceNorm's backward (see test_networks.py).
    torch.manual_seed(0)
    model = build_model(name, **TINY, **kwargs)
    out_channels = kwargs.get("out_channels", 1)
    logits = model(torch.randn(*TINY_SHAPE))
    assert len(logits) == model.num_decoders == (2 if name.startswith("mm") else 1)
    for out in logits:
        assert out.shape == (2, out_channels, 16, 16, 32)
    sum((out * torch.randn_like(out)).sum() for out in logits).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("out_channels", [1, 4])
def test_probabilities_mean_of_decoder_probabilities(out_channels: int) -> None:
    torch.manual_seed(0)
    model = build_model("mm3d", **TINY, out_channels=out_channels)
    x = torch.randn(1, 2, 16, 32, 16)
    with torch.no_grad():
        logits = model(x)
        probs = model.probabilities(x)
    if out_channels == 1:
        expected = torch.stack([torch.sigmoid(z) for z in logits]).mean(0)
    else:
        expected = torch.stack([torch.softmax(z, dim=1) for z in logits]).mean(0)
        torch.testing.assert_close(probs.sum(dim=1), torch.ones(1, 16, 32, 16))
    assert probs.shape == (1, out_channels, 16, 32, 16)
    torch.testing.assert_close(probs, expected)


@pytest.mark.parametrize("shape", [(1, 2, 16, 16, 24), (1, 2, 8, 16, 16), (2, 16, 16, 16)])
def test_bad_shape_is_a_one_line_error_naming_it(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(str(shape))) as info:
        check_input_3d(torch.zeros(shape), 2)
    assert "\n" not in str(info.value)
    if len(shape) == 5:
        assert "divisible by 16" in str(info.value)


def test_wrong_channel_count_raises() -> None:
    with pytest.raises(ValueError, match="expected 2 input channels"):
        build_model("unet3d", **TINY)(torch.randn(1, 3, 16, 16, 32))


def test_encoder_feature_shapes() -> None:
    features = Encoder3d(in_channels=2, width=4)(torch.randn(1, 2, 16, 32, 48))
    assert [tuple(f.shape) for f in features] == [
        (1, 4, 16, 32, 48), (1, 8, 8, 16, 24), (1, 16, 4, 8, 12), (1, 32, 2, 4, 6),
        (1, 64, 1, 2, 3), (1, 64, 1, 2, 3),
    ]


def test_decoder_stage_widths_and_blocks() -> None:
    from torch import nn

    from mismatch.models.blocks import NASB, PASB, PlainBlock

    expected = {"mm3d": (PASB, NASB), "mm3d-a": (PlainBlock, PlainBlock),
                "mm3d-b": (PlainBlock, NASB), "mm3d-c": (PlainBlock, PASB)}
    for name, kinds in expected.items():
        model = build_model(name, **TINY)
        for decoder, kind in zip(model.decoders, kinds):
            assert all(type(stage) is kind for stage in decoder.stages), name  # the 2D blocks, built in 3D
            convs = [s.main if kind is PlainBlock else s.main[0] for s in decoder.stages]
            assert all(isinstance(c.conv, nn.Conv3d) for c in convs), name
            assert [c.conv.out_channels for c in convs] == [32, 16, 8, 4, 4]
        assert model.decoders[0].head is not model.decoders[1].head


def test_pasb3d_side_is_dilated_and_negative_sigmoid_reaches_nasb3d() -> None:
    block = PASB3d(16)
    conv = block.side.dilated.conv
    assert conv.dilation == (5, 5, 5) and conv.kernel_size == (3, 3, 3) and conv.in_channels == 2
    model = build_model("mm3d", **TINY, negative_sigmoid=True)
    assert all(stage.negative_sigmoid for stage in model.decoders[1].stages)
    assert not any(stage.negative_sigmoid for stage in build_model("mm3d-b", **TINY).decoders[1].stages)


def test_forward_stages_hook_sees_every_stage() -> None:
    model = build_model("mm3d-a", **TINY)
    seen: list[tuple[int, tuple[int, ...]]] = []

    def hook(index: int, y: torch.Tensor) -> torch.Tensor:
        seen.append((index, tuple(y.shape)))
        return torch.zeros_like(y)

    with torch.no_grad():
        out = model.decoders[0](model.encoder(torch.randn(1, 2, 16, 16, 32)), feature_transform=hook)
    assert seen == [(0, (1, 32, 2, 2, 4)), (1, (1, 16, 4, 4, 8)), (2, (1, 8, 8, 8, 16)),
                    (3, (1, 4, 16, 16, 32)), (4, (1, 4, 16, 16, 32))]
    # The last stage's output was zeroed: the logits are the head's bias everywhere.
    torch.testing.assert_close(out, model.decoders[0].head.bias.view(1, 1, 1, 1, 1).expand_as(out))
