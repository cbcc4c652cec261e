"""Shared augmentations: flips and geometric RandAugment ops move targets with the image."""

import pytest
import torch

from mismatch.methods.augment import (
    GEOMETRIC_OPS,
    PHOTOMETRIC_OPS,
    gaussian_noise,
    rand_augment,
    random_flip,
    shift,
)


def _marker(h=16, w=16):
    """An image whose only bright pixels form an off-centre, asymmetric L shape."""
    x = torch.zeros(1, 1, h, w)
    x[..., 3:6, 4] = 1.0
    x[..., 5, 4:8] = 1.0
    return x


def test_random_flip_moves_label_with_image_and_draws_per_slice():
    torch.manual_seed(0)
    image = torch.cat([_marker()] * 8)  # (8, 1, 16, 16)
    flipped, label = random_flip(image, image.clone())
    assert torch.equal(flipped, label)
    variants = {tuple(torch.nonzero(flipped[b, 0])[0].tolist()) for b in range(8)}
    assert len(variants) > 1  # slices drew different flips


def test_gaussian_noise():
    x = torch.zeros(1, 1, 64, 64)
    assert gaussian_noise(x, 0.0) is x
    torch.manual_seed(0)
    noisy = gaussian_noise(x, 0.5)
    assert abs(float(noisy.std()) - 0.5) < 0.05


def test_shift_fills_with_zeros():
    x = torch.arange(1.0, 6.0).view(1, 1, 1, 5)
    assert shift(x, 2, -1).flatten().tolist() == [0, 0, 1, 2, 3]
    assert shift(x, -1, -1).flatten().tolist() == [2, 3, 4, 5, 0]
    assert shift(x, 7, -1).abs().sum() == 0


@pytest.mark.parametrize("name", sorted(set(GEOMETRIC_OPS) - {"rotate"}))
def test_integer_geometric_ops_keep_image_and_target_paired_exactly(name):
    for seed in range(6):
        torch.manual_seed(seed)
        image, target = GEOMETRIC_OPS[name](_marker(), _marker(), 1.0)
        assert torch.equal(image, target)
    assert not torch.equal(image, _marker())  # the op did move something


def test_rotation_moves_target_with_image():
    torch.manual_seed(0)
    image, target = GEOMETRIC_OPS["rotate"](_marker(), _marker(), 1.0)
    assert target.sum() > 0 and not torch.equal(target, _marker())
    # every target pixel samples (nearest) a point whose bilinear image value is positive
    assert bool((image[target > 0] > 0).all())


def test_non_square_rot90_keeps_shape():
    image, target = GEOMETRIC_OPS["rot90"](torch.randn(1, 2, 8, 16), torch.ones(1, 1, 8, 16), 1.0)
    assert image.shape == (1, 2, 8, 16) and target.shape == (1, 1, 8, 16)


@pytest.mark.parametrize("name", sorted(PHOTOMETRIC_OPS))
def test_photometric_ops_leave_targets_alone(name):
    torch.manual_seed(0)
    image = torch.randn(1, 2, 16, 16)
    target = torch.rand(1, 2, 16, 16)
    out, out_target = PHOTOMETRIC_OPS[name](image, target, 0.8)
    assert out.shape == image.shape and torch.isfinite(out).all()
    assert out_target is target


def test_rand_augment_with_geometric_ops_only_keeps_pairs():
    torch.manual_seed(1)
    image = torch.cat([_marker()] * 4)
    ops = [n for n in GEOMETRIC_OPS if n != "rotate"]
    out, target = rand_augment(image, torch.cat([image, torch.ones_like(image)], 1), n_ops=3, ops=ops)
    assert torch.equal(out, target[:, :1])
    with pytest.raises(ValueError, match="shear"):
        rand_augment(image, image, ops=["shear"])
