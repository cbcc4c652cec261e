"""Registry-wide network tests on tiny inputs (width 4, 16x16, two input channels)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from mismatch.models import (
    NASB,
    PASB,
    AttentionDecoder,
    Encoder,
    PlainBlock,
    TwoDecoderNet,
    UNetDecoder,
    build_model,
    factory,
    list_models,
    make_block,
    network_card,
    register_model,
)

TINY = dict(in_channels=2, width=4)

# Published counts at width 24, one input channel (official-implementation.md).
PARAMETER_COUNTS = {
    "unet": 1_879_777,
    "mm": 2_681_132,
    "mm-c": 2_559_872,
    "mm-b": 2_561_702,
    "mm-a": 2_440_442,
}


# The 2D networks (the 3D ones are tested in test_networks3d.py).
NAMES_2D = [name for name in list_models() if network_card(name).spatial_dims == 2]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registry_names() -> None:
    assert NAMES_2D == sorted(PARAMETER_COUNTS)


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_parameter_counts_match_authors(name: str) -> None:
    assert n_params(build_model(name, in_channels=1, width=24)) == PARAMETER_COUNTS[name]


@pytest.mark.parametrize(
    "name, kwargs",
    [(name, {}) for name in NAMES_2D] + [("mm", {"negative_sigmoid": True})],
    ids=[*NAMES_2D, "mm-negative-sigmoid"],
)
def test_forward_backward_every_parameter_learns(name: str, kwargs: dict) -> None:
    # A random-weighted loss, not a plain sum: a spatially constant upstream gradient is
    # annihilated by InstanceNorm's backward and could hide (or fake) a broken path. At
    # init every IN channel has zero mean (gamma=1, beta=0), so ReLU never kills a whole
    # channel and every parameter must get a non-zero gradient.
    torch.manual_seed(0)
    model = build_model(name, **TINY, **kwargs)
    x = torch.randn(2, 2, 16, 16)
    logits = model(x)
    assert isinstance(logits, list) and len(logits) == model.num_decoders
    assert len(model.decoders) == model.num_decoders
    for out in logits:
        assert out.shape == (2, 1, 16, 16)
    loss = sum((out * torch.randn_like(out)).sum() for out in logits)
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES_2D)
def test_probabilities_are_mean_of_decoder_sigmoids(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, **TINY)
    x = torch.randn(1, 2, 16, 24)
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(z) for z in model(x)]).mean(0)
        probs = model.probabilities(x)
    assert probs.shape == (1, 1, 16, 24)
    torch.testing.assert_close(probs, expected)


@pytest.mark.parametrize("shape", [(1, 2, 12, 16), (1, 2, 16, 20), (2, 16, 16)])
def test_bad_spatial_shape_raises_naming_shape(shape: tuple[int, ...]) -> None:
    model = build_model("mm", **TINY)
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        model(torch.randn(*shape))


def test_wrong_channel_count_raises() -> None:
    with pytest.raises(ValueError, match="expected 2 input channels"):
        build_model("unet", **TINY)(torch.randn(1, 3, 16, 16))


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("mm")(lambda in_channels, width: nn.Identity())


def test_register_and_build_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory.NETWORKS, "_entries", dict(factory.NETWORKS._entries))

    @register_model("mm-test")
    def _factory(in_channels: int = 1, width: int = 24) -> TwoDecoderNet:
        return TwoDecoderNet(Encoder(in_channels, width), "nasb", "pasb")

    assert "mm-test" in list_models()
    model = build_model("mm-test", **TINY)
    assert isinstance(model.decoders[0].stages[0], NASB)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(KeyError, match="mm-a"):
        build_model("no-such-net")


def test_encoder_feature_shapes() -> None:
    features = Encoder(in_channels=2, width=4)(torch.randn(1, 2, 16, 32))
    shapes = [tuple(f.shape) for f in features]
    assert shapes == [(1, 4, 16, 32), (1, 8, 8, 16), (1, 16, 4, 8), (1, 32, 2, 4), (1, 32, 2, 4)]


def test_two_decoder_nets_use_requested_blocks() -> None:
    expected = {"mm": (PASB, NASB), "mm-a": (PlainBlock, PlainBlock),
                "mm-b": (PlainBlock, NASB), "mm-c": (PlainBlock, PASB)}
    for name, kinds in expected.items():
        model = build_model(name, **TINY)
        for decoder, kind in zip(model.decoders, kinds):
            assert all(type(stage) is kind for stage in decoder.stages), name
        assert model.decoders[0].head is not model.decoders[1].head


def test_negative_sigmoid_reaches_nasb() -> None:
    model = build_model("mm", **TINY, negative_sigmoid=True)
    assert all(stage.negative_sigmoid for stage in model.decoders[1].stages)
    assert not any(stage.negative_sigmoid for stage in build_model("mm", **TINY).decoders[1].stages)


STAGE_SHAPES = {
    # AttentionDecoder upsamples inside a stage, UNetDecoder at the start of the next one.
    "attention": [(1, 16, 4, 4), (1, 8, 8, 8), (1, 4, 16, 16), (1, 4, 16, 16)],
    "unet": [(1, 16, 2, 2), (1, 8, 4, 4), (1, 4, 8, 8), (1, 4, 16, 16)],
}


@pytest.mark.parametrize("kind", sorted(STAGE_SHAPES))
def test_feature_transform_hook(kind: str) -> None:
    torch.manual_seed(0)
    decoder = AttentionDecoder(4, "pasb") if kind == "attention" else UNetDecoder(4)
    features = Encoder(2, 4)(torch.randn(1, 2, 16, 16))
    seen: list[tuple[int, tuple[int, ...]]] = []

    def record(index: int, y: torch.Tensor) -> torch.Tensor:
        seen.append((index, tuple(y.shape)))
        return y

    with torch.no_grad():
        plain = decoder(features)
        same = decoder(features, feature_transform=record)
        zeroed = decoder(features, feature_transform=lambda i, y: y * 0 if i == 3 else y)
        stages = decoder.forward_stages(features)
    assert seen == list(enumerate(STAGE_SHAPES[kind]))
    torch.testing.assert_close(plain, same)
    torch.testing.assert_close(zeroed, decoder.head.bias.view(1, 1, 1, 1).expand_as(plain))
    torch.testing.assert_close(decoder.head(stages[-1]), plain)


def test_bridge_is_not_cropped() -> None:
    # The authors' code feeds a centre-cropped 2x zoom of the bridge; here a change in the
    # bridge's corner pixel must reach the decoder output.
    torch.manual_seed(0)
    decoder = AttentionDecoder(4, "plain")
    features = Encoder(2, 4)(torch.randn(1, 2, 32, 32))
    changed = list(features)
    changed[-1] = features[-1].clone()
    changed[-1][..., 0, 0] += 10.0
    with torch.no_grad():
        diff = (decoder(changed) - decoder(features)).abs()
    assert diff[..., :8, :8].max() > 0


@pytest.mark.parametrize("kind", ["plain", "pasb", "nasb"])
def test_blocks_keep_shape_and_expose_branches(kind: str) -> None:
    block = make_block(kind, 16)
    x = torch.randn(1, 16, 8, 8)
    assert block(x).shape == x.shape
    assert isinstance(block.main, nn.Module)
    assert (block.side is None) == (kind == "plain")
    if block.side is not None:
        assert block.side(x).shape == x.shape


def test_unknown_block_kind_raises() -> None:
    with pytest.raises(ValueError, match="pasb"):
        make_block("fancy", 8)
