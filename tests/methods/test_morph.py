"""Morph: decoder 1's features are eroded, decoder 2's dilated, at every stage."""

import torch
from tiny import tiny_method

from mismatch.losses import soft_dice_loss, symmetric_mse
from mismatch.methods import Batch
from mismatch.methods.morph import dilate, erode


def _method(**settings):
    return tiny_method('morph', **settings)


def test_erosion_below_identity_below_dilation():
    x = torch.randn(2, 3, 8, 8)
    assert (erode(x) <= x).all() and (x <= dilate(x)).all()
    assert (erode(x) < x).any() and (x < dilate(x)).any()
    assert erode(x).shape == dilate(x).shape == x.shape


def _stage_pairs(method, decoder_index, image):
    """(before, after) of the method's feature transform at each stage of one decoder."""
    pairs = []
    transform = method.transforms()[decoder_index]

    def recording(index, y):
        out = transform(index, y)
        pairs.append((y.detach(), out.detach()))
        return out

    method.net.decoders[decoder_index](method.net.encoder(image), feature_transform=recording)
    return pairs


def test_decoder_one_is_eroded_and_decoder_two_dilated_at_every_stage():
    torch.manual_seed(0)
    method = _method()
    image = torch.randn(1, 1, 16, 16)
    eroded, dilated = _stage_pairs(method, 0, image), _stage_pairs(method, 1, image)
    assert len(eroded) == len(dilated) == 4
    for before, after in eroded:
        assert (after <= before).all() and (after < before).any()
    for before, after in dilated:
        assert (after >= before).all() and (after > before).any()


def test_stages_option_limits_the_morphology():
    method = _method(stages=[3])
    for before, after in _stage_pairs(method, 0, torch.randn(1, 1, 16, 16))[:3]:
        assert torch.equal(before, after)


def test_losses_and_prediction_use_the_morphological_decoders():
    method = _method(alpha=0.5, noise_std=0.0)
    g = torch.Generator().manual_seed(5)
    batch = Batch(torch.randn(2, 1, 16, 16, generator=g), (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float(),
                  torch.tensor([True, False]))
    losses = method.training_step(batch, epoch=0)
    p1, p2 = (torch.sigmoid(lg) for lg in method.logits(batch.image))
    torch.testing.assert_close(losses["dice"], soft_dice_loss(p1[:1], batch.label[:1]) + soft_dice_loss(p2[:1], batch.label[:1]))
    torch.testing.assert_close(losses["consistency"], 0.5 * symmetric_mse(p1[1:], p2[1:]))
    plain = method.net.probabilities(batch.image)
    morph = method.eval().predict_proba(batch.image)
    torch.testing.assert_close(morph, (p1 + p2) / 2)
    assert not torch.allclose(morph, plain)
    assert method.model_name == "mm-a"
