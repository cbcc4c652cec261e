"""Sup1 and Sup2: labelled slices only, augmented, Dice on every decoder."""

import pytest
import torch
from tiny import tiny_batch, tiny_method

from mismatch.losses import soft_dice_loss
from mismatch.methods import Batch


def _method(name, **settings):
    return tiny_method(name, **settings)


def _batch(labelled):
    return tiny_batch(labelled, seed=2)


@pytest.mark.parametrize("name", ["sup1", "sup2"])
def test_supervised_methods_ignore_unlabelled_slices(name):
    method = _method(name)
    assert method.uses_unlabelled is False
    mixed = _batch([True, False])
    torch.manual_seed(0)
    losses = method.training_step(mixed, epoch=0)
    torch.manual_seed(0)
    alone = method.training_step(Batch(mixed.image[:1], mixed.label[:1], mixed.labelled[:1]), epoch=0)
    assert set(losses) == {"dice", "loss"}
    torch.testing.assert_close(losses["loss"], alone["loss"])
    empty = method.training_step(_batch([False]), epoch=0)
    empty["loss"].backward()  # a batch without labels is a no-op step, not an error
    assert float(empty["loss"].detach()) == 0


def test_sup1_dice_on_augmented_slice_without_augmentation_is_plain_dice():
    method = _method("sup1", flip=False, noise_std=0.0)
    batch = _batch([True])
    losses = method.training_step(batch, epoch=0)
    expected = soft_dice_loss(torch.sigmoid(method.net(batch.image)[0]), batch.label)
    torch.testing.assert_close(losses["dice"], expected)


def test_sup1_augments_its_input():
    method = _method("sup1", flip=False, noise_std=0.5)
    batch = _batch([True])
    torch.manual_seed(0)
    noisy = method.training_step(batch, epoch=0)["dice"]
    clean = soft_dice_loss(torch.sigmoid(method.net(batch.image)[0]), batch.label)
    assert not torch.allclose(noisy, clean)


@pytest.mark.parametrize("model", ["mm", "mm-a", "mm-b", "mm-c"])
def test_sup2_trains_every_decoder_of_any_variant(model):
    method = _method("sup2", model=model, flip=False, noise_std=0.0)
    batch = _batch([True])
    p1, p2 = (torch.sigmoid(lg) for lg in method.net(batch.image))
    expected = soft_dice_loss(p1, batch.label) + soft_dice_loss(p2, batch.label)
    torch.testing.assert_close(method.training_step(batch, epoch=0)["dice"], expected)
    assert method.model_name == model
