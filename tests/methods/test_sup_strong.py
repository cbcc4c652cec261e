"""sup-strong: nnU-Net-style augmentation keeps image and label aligned pixel for pixel."""

import json
import math

import pytest
import torch
from tiny import tiny_batch, tiny_method

from mismatch.config import load_trial_spec
from mismatch.methods.configs.sup_strong import SupStrongConfig
from mismatch.methods.sup_strong import (
    affine_thetas,
    gamma_augment,
    nnunet_augment,
    spatial_augment,
    warp,
)
from mismatch.trial.run import run_trial

ALWAYS = {"p_rotation": 1.0, "p_scaling": 1.0, "p_elastic": 1.0, "elastic_alpha": (200.0, 400.0),
          "elastic_sigma": (3.0, 4.0)}


def _label(n=4, h=32, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    blobs = torch.nn.functional.avg_pool2d(torch.rand(n, 1, h, w, generator=g), 5, 1, 2)
    return (blobs > blobs.mean()).float()


@pytest.mark.parametrize(("image_mode", "label_mode"), [("nearest", "nearest"), ("bilinear", "linear")])
def test_geometric_augmentation_keeps_image_and_label_aligned(image_mode, label_mode):
    torch.manual_seed(0)
    label = _label()
    config = SupStrongConfig(**ALWAYS, image_interpolation=image_mode, label_interpolation=label_mode,
                             p_gamma=0.0, p_gamma_inverted=0.0)
    image, out = nnunet_augment(label.clone(), label.clone(), config)  # image = the label's one-hot
    assert not torch.equal(out, label)  # something moved
    assert torch.equal(out, (image > 0.5).float())
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_slices_that_draw_no_spatial_transform_are_untouched():
    torch.manual_seed(0)
    image, label = torch.randn(6, 1, 16, 16), _label(6, 16, 16)
    config = SupStrongConfig(p_rotation=0.0, p_scaling=0.0, p_elastic=0.0)
    out_image, out_label = spatial_augment(image, label, config)
    assert torch.equal(out_image, image) and torch.equal(out_label, label)


def test_a_quarter_turn_is_a_rot90_on_a_square_slice():
    label = _label(1, 16, 16)
    theta = affine_thetas(1, 16, 16, torch.tensor([math.pi / 2]), torch.tensor([1.0]))
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 16, 16], align_corners=False)
    image, out = warp(label, label, grid, "nearest", "nearest")
    turned = torch.rot90(label, 1, dims=(-2, -1))
    assert torch.equal(out, turned) or torch.equal(out, torch.rot90(label, -1, dims=(-2, -1)))
    assert torch.equal(image, out)


def test_scaling_above_one_zooms_out():
    label = torch.zeros(1, 1, 32, 32)
    label[..., 8:24, 8:24] = 1
    theta = affine_thetas(1, 32, 32, torch.tensor([0.0]), torch.tensor([1.4]))
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 32, 32], align_corners=False)
    _, out = warp(label, label, grid, "nearest", "nearest")
    assert 0 < out.sum() < label.sum()


def test_gamma_keeps_each_slices_mean_and_std_and_leaves_undrawn_slices():
    torch.manual_seed(0)
    image = 2 + 3 * torch.randn(5, 1, 16, 16)
    for invert in (False, True):
        out = gamma_augment(image, 1.0, (0.7, 1.5), invert=invert)
        assert not torch.allclose(out, image)
        torch.testing.assert_close(out.mean((1, 2, 3)), image.mean((1, 2, 3)), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out.std((1, 2, 3)), image.std((1, 2, 3)), rtol=1e-4, atol=1e-4)
    assert torch.equal(gamma_augment(image, 0.0, (0.7, 1.5), invert=False), image)


def test_poly_schedule_by_default_and_the_studys_with_schedule_train():
    spec = load_trial_spec({"data": {"synthetic": {}}, "method": {"name": "sup-strong", "width": 4}})
    method = tiny_method("sup-strong")
    setup = method.configure_optimizers(spec.train, steps_per_epoch=10)[0]
    lr0 = setup.optimizer.param_groups[0]["lr"]
    setup.optimizer.step(), setup.scheduler.step()
    total = spec.train.epochs * 10
    assert setup.optimizer.param_groups[0]["lr"] == pytest.approx(lr0 * (1 - 1 / total) ** 0.9)
    constant = tiny_method("sup-strong", schedule="train").configure_optimizers(spec.train, 10)[0]
    constant.optimizer.step(), constant.scheduler.step()
    assert constant.optimizer.param_groups[0]["lr"] == pytest.approx(spec.train.lr)


def test_trains_with_the_one_loop_twice_identically_on_labelled_slices_only(tiny_dict):
    spec = load_trial_spec(tiny_dict(method={"name": "sup-strong", "width": 4, **ALWAYS}))
    first, second = run_trial(spec), run_trial(spec)
    row = first.trial
    assert row["method"] == "sup-strong" and row["model"] == "unet" and row["params"] > 0
    assert row["unlabelled_slices"] == 0
    assert all(math.isfinite(v) for v in json.loads(row["final_losses_json"]).values())
    assert first.images.equals(second.images)


def test_every_parameter_gets_a_finite_gradient():
    torch.manual_seed(0)
    method = tiny_method("sup-strong", **ALWAYS)
    losses = method.training_step(tiny_batch([True, True, False], seed=1), epoch=0)
    assert set(losses) == {"bce", "dice", "loss"}
    losses["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in method.parameters())
