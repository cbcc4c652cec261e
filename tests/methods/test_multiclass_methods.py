"""Every method with C = 4 classes on tiny 2D batches; the 3D-capable methods on tiny 3D
patches with a tiny 3D network registered here (when no real one is); the name rule and the
spec check that refuses a 2D-only method on 3D data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mismatch.config import METHODS, SpecError, load_trial_spec
from mismatch.losses import probabilities
from mismatch.methods import Batch, build_method
from mismatch.methods.base import network_for_dims
from mismatch.models import EncoderDecoderNet, factory

C = 4
ALL_METHODS = ["bcp", "cct", "cps", "fixmatch", "mean-teacher", "mismatch", "morph", "mta",
               "sup-strong", "sup1", "sup2", "ua-mt", "unimatch"]
THREE_D = ["mean-teacher", "mismatch", "sup1", "sup2", "ua-mt"]


def spec_for(name: str, **settings):
    return load_trial_spec({"data": {"synthetic": {}}, "method": {"name": name, "width": 4, **settings}})


def multiclass_batch(labelled: list[bool], classes: int = C, spatial: tuple[int, ...] = (16, 16), seed: int = 0) -> Batch:
    """Random images and class-index labels (B, 1, *spatial) in 0..classes-1 (zero when unlabelled)."""
    g = torch.Generator().manual_seed(seed)
    n = len(labelled)
    label = torch.randint(0, classes, (n, 1, *spatial), generator=g).float()
    mask = torch.tensor(labelled)
    label = label * mask.view(-1, *([1] * (label.ndim - 1)))
    return Batch(torch.randn(n, 1, *spatial, generator=g), label, mask)


def check_step_and_prediction(method, batch: Batch, classes: int) -> None:
    method.train()
    losses = method.training_step(batch, epoch=0)
    assert torch.isfinite(losses["loss"]), losses
    losses["loss"].backward()
    for pname, param in method.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, pname
            assert torch.isfinite(param.grad).all(), pname
            assert param.grad.abs().sum() > 0, pname
    method.eval()
    with torch.no_grad():
        prob = method.predict_proba(batch.image)
        decoders = method.decoder_probabilities(batch.image)
    channels = 1 if classes == 2 else classes
    assert prob.shape == (batch.image.shape[0], channels, *batch.image.shape[2:])
    assert ((prob >= 0) & (prob <= 1)).all()
    if classes > 2:
        torch.testing.assert_close(prob.sum(dim=1), torch.ones_like(prob[:, 0]))
    for p in decoders or []:
        assert p.shape == prob.shape
    if decoders:
        torch.testing.assert_close(torch.stack(decoders).mean(dim=0), prob)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_trains_and_predicts_four_classes_in_2d(name: str) -> None:
    torch.manual_seed(0)
    method = build_method(spec_for(name).method, in_channels=1, num_classes=C)
    assert method.num_classes == C and method.spatial_dims == 2 and method.out_channels == C
    check_step_and_prediction(method, multiclass_batch([True, True, False, False]), C)


def test_old_two_argument_call_is_binary_2d() -> None:
    method = build_method(spec_for("sup1").method, 1)
    assert (method.num_classes, method.spatial_dims, method.out_channels) == (2, 2, 1)


def test_two_decoder_options_still_reach_the_network() -> None:
    method = build_method(spec_for("mismatch", negative_sigmoid=True).method, 1, num_classes=3)
    assert all(stage.negative_sigmoid for stage in method.net.decoders[1].stages)
    assert method.net.decoders[0].head.out_channels == 3


# ---------------------------------------------------------------- 3D


class _TinyEncoder3d(nn.Module):
    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = torch.relu(self.conv(x))
        return [y, y, y, y, y]  # the encoder's five features, one resolution


class _TinyDecoder3d(nn.Module):
    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__()
        self.mix = nn.Conv3d(2 * width, width, 3, padding=1)
        self.head = nn.Conv3d(width, out_channels, 1)

    def forward(self, features: list[torch.Tensor], feature_transform=None) -> torch.Tensor:
        return self.head(torch.relu(self.mix(torch.cat([features[0], features[-1]], dim=1))))


def _tiny_net3d(decoders: int):
    def factory(in_channels: int = 1, width: int = 4, out_channels: int = 1, negative_sigmoid: bool = False) -> nn.Module:
        return EncoderDecoderNet(_TinyEncoder3d(in_channels, width),
                                 [_TinyDecoder3d(width, out_channels) for _ in range(decoders)])
    return factory


@pytest.fixture
def tiny_3d_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    """``unet3d`` and ``mm3d`` replaced by tiny 3D networks for this test (the real ones are
    pinned in tests/models/test_networks3d.py; a step of theirs costs seconds on CPU)."""
    entries = dict(factory.NETWORKS._entries)
    cards = {"unet3d": dict(decoders=1, decoder_blocks=("unet",)),
             "mm3d": dict(decoders=2, decoder_blocks=("pasb", "nasb"), accepts=("negative_sigmoid",))}
    for name in cards:
        entries.pop(name)
    monkeypatch.setattr(factory.NETWORKS, "_entries", entries)
    for name, card in cards.items():
        factory.register_model(name, spatial_dims=3, **card)(_tiny_net3d(card["decoders"]))


@pytest.mark.parametrize("classes", [2, C])
@pytest.mark.parametrize("name", THREE_D)
def test_3d_methods_train_and_predict_on_tiny_patches(name: str, classes: int, tiny_3d_networks: None) -> None:
    torch.manual_seed(0)
    method = build_method(spec_for(name).method, in_channels=1, num_classes=classes, spatial_dims=3)
    assert method.spatial_dims == 3 and method.model_name in ("unet3d", "mm3d")
    batch = multiclass_batch([True, False], classes, spatial=(16, 32, 16))
    check_step_and_prediction(method, batch, classes)


def test_3d_flip_moves_image_and_label_alike() -> None:
    from mismatch.methods.augment import random_flip

    torch.manual_seed(3)
    image = torch.randn(8, 1, 4, 5, 6)
    flipped, label = random_flip(image, image.clone())
    assert torch.equal(flipped, label)
    # each patch is its own mirror image along some subset of the three axes, and some are flipped in depth
    depth_flipped = [torch.equal(flipped[b], image[b].flip(-3)) or torch.equal(flipped[b], image[b].flip(-3, -1))
                     or torch.equal(flipped[b], image[b].flip(-3, -2)) or torch.equal(flipped[b], image[b].flip(-3, -2, -1))
                     for b in range(8)]
    assert any(depth_flipped) and not all(depth_flipped)


def test_2d_only_method_refuses_3d_build() -> None:
    with pytest.raises(ValueError, match="'fixmatch' supports 2D data only"):
        build_method(spec_for("fixmatch").method, 1, spatial_dims=3)


def test_network_name_rule() -> None:
    assert network_for_dims("mm-b", 2) == "mm-b"
    assert [network_for_dims(n, 3) for n in ("unet", "mm", "mm-a", "mm-c")] == ["unet3d", "mm3d", "mm3d-a", "mm3d-c"]


def test_network_name_rule_keeps_3d_names(tiny_3d_networks: None) -> None:
    assert network_for_dims("mm3d", 3) == "mm3d"


def test_a_3d_network_on_2d_data_is_refused(tiny_3d_networks: None) -> None:
    method = build_method(spec_for("sup1").method, 1)
    with pytest.raises(ValueError, match="network 'mm3d' is 3D but this trial's data is 2D"):
        method.build_net("mm3d")


def test_config_metadata_lists_the_five_3d_methods() -> None:
    assert sorted(name for name, config in METHODS.items() if 3 in config.spatial_dims) == THREE_D
    assert all(config.spatial_dims == (2,) for name, config in METHODS.items() if name not in THREE_D)


def _three_d_spec(name: str, monkeypatch: pytest.MonkeyPatch):
    data: dict = {"synthetic": {}, "spatial_dims": 3, "patch_size": [16, 32, 16]}
    return load_trial_spec({"data": data, "method": {"name": name, "width": 4}})


def test_spec_refuses_a_2d_only_method_on_3d_data(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SpecError, match="method 'unimatch' supports 2D data only, but data.spatial_dims is 3"):
        _three_d_spec("unimatch", monkeypatch)


def test_spec_accepts_a_3d_method_on_3d_data(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _three_d_spec("ua-mt", monkeypatch).method.name == "ua-mt"


def test_probabilities_helper_matches_the_method() -> None:
    method = build_method(spec_for("sup1").method, 1, num_classes=3)
    logits = torch.randn(1, 3, 2, 2)
    assert torch.equal(method.probabilities(logits), probabilities(logits))
