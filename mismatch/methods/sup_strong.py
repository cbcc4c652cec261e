"""sup-strong: the U-Net trained on labelled slices with nnU-Net-style augmentation and a
poly learning-rate schedule (Isensee et al. 2024, nnU-Net Revisited).

Per slice, in nnU-Net's order: a spatial transform (rotation, scaling, elastic deformation,
each drawn with its own probability, applied to image and label through one sampling grid),
an inverted gamma, a gamma, and mirroring along each axis. The loss is nnU-Net's
``CE + soft Dice`` (binary; with C > 2 classes the categorical CE and the multi-class Dice,
and labels are resampled one class map at a time, as nnU-Net's ``resize_segmentation``). Settings: :class:`SupStrongConfig`.

The augmentation is hand-written in batched torch (``affine_grid`` + ``grid_sample``) rather
than taken from MONAI's dictionary transforms or batchgenerators: those transform one sample
at a time, with their own numpy random states, in the data loader; here the whole batch is
transformed on the training device in a few kernels (the loop streams device-resident
batches), with its randomness from torch's global RNG, so CPU runs repeat exactly under the
loop's seeding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mismatch.config import ScheduleSpec, TrainSpec
from mismatch.losses import cross_entropy, dice_loss, one_hot, probabilities
from mismatch.methods.augment import random_flip
from mismatch.methods.base import Batch, Method
from mismatch.methods.configs.sup_strong import SupStrongConfig
from mismatch.methods.sup import no_loss
from mismatch.optim import OptimizerSetup, build_optimizer, build_scheduler


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=device)


def _draw(n: int, p: float, device: torch.device) -> torch.Tensor:
    """(n,) bool: which slices get an augmentation of probability ``p``."""
    return torch.rand(n, device=device) < p


def affine_thetas(
    n: int, height: int, width: int, angle: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """``affine_grid`` matrices (n, 2, 3) sampling output pixel ``q`` at ``scale R(angle) q``
    about the centre, in pixel units (so a rotation stays a rotation on non-square slices)."""
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    # normalised coordinates are pixel offsets from the centre divided by (W/2, H/2)
    theta = torch.zeros(n, 2, 3, device=angle.device, dtype=angle.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    return theta


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(n, 2 * radius + 1) normalised 1D Gaussian kernels, one per sigma."""
    x = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    k = torch.exp(-0.5 * (x[None] / sigma[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def elastic_offsets(
    n: int, height: int, width: int, alpha: torch.Tensor, sigma: torch.Tensor, max_sigma: float
) -> torch.Tensor:
    """Displacements (n, H, W, 2) in ``grid_sample`` units: batchgenerators' elastic field,
    uniform noise in [-1, 1] smoothed by a Gaussian of ``sigma`` pixels (zero outside the
    slice, as its ``mode='constant'``) times ``alpha`` pixels, one field per axis. The kernels
    reach ``3 max_sigma`` pixels (a Python number: the step never reads a device value)."""
    device, dtype = alpha.device, alpha.dtype
    radius = max(1, math.ceil(3 * max_sigma))
    kernels = _gaussian_kernels(sigma, radius).repeat_interleave(2, dim=0)  # (2n, k)
    noise = (2 * torch.rand(1, 2 * n, height, width, device=device, dtype=dtype) - 1)
    smooth = F.conv2d(noise, kernels[:, None, :, None], padding=(radius, 0), groups=2 * n)
    smooth = F.conv2d(smooth, kernels[:, None, None, :], padding=(0, radius), groups=2 * n)
    field = smooth.view(n, 2, height, width) * alpha.view(n, 1, 1, 1)  # pixels: (dx, dy)
    to_grid = torch.tensor([2.0 / width, 2.0 / height], device=device, dtype=dtype).view(1, 2, 1, 1)
    return (field * to_grid).permute(0, 2, 3, 1)


def warp(
    image: torch.Tensor, label: torch.Tensor, grid: torch.Tensor,
    image_mode: str = "bicubic", label_mode: str = "linear", num_classes: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample image and label at the same ``grid`` (zeros outside). Labels are sampled by
    nearest neighbour (``nearest``) or bilinearly and thresholded at 0.5 (``linear``, as
    nnU-Net's order-1 segmentation resampling); with ``num_classes > 2`` the linear mode
    resamples each class's one-hot map and takes the argmax (zeros outside: background)."""
    out = F.grid_sample(image, grid, mode=image_mode, padding_mode="zeros", align_corners=False)
    if label_mode == "nearest":
        return out, F.grid_sample(label, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if num_classes > 2:
        soft = F.grid_sample(one_hot(label, num_classes), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out, soft.argmax(dim=1, keepdim=True).to(label.dtype)
    soft = F.grid_sample(label, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out, (soft > 0.5).to(label.dtype)


def spatial_augment(
    image: torch.Tensor, label: torch.Tensor, c: SupStrongConfig, num_classes: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """nnU-Net's spatial transform per slice: rotation, scaling and elastic deformation, each
    with its own probability; slices that draw none are returned untouched."""
    n, _, height, width = image.shape
    device, dtype = image.device, image.dtype
    rotate, scale_it, deform = (_draw(n, p, device) for p in (c.p_rotation, c.p_scaling, c.p_elastic))
    max_angle = math.radians(c.rotation_deg)
    angle = torch.where(rotate, _uniform(n, -max_angle, max_angle, device), 0.0).to(dtype)
    scale = torch.where(scale_it, _uniform(n, *c.scale, device), 1.0).to(dtype)
    grid = F.affine_grid(affine_thetas(n, height, width, angle, scale), [n, 1, height, width], align_corners=False)
    alpha = torch.where(deform, _uniform(n, *c.elastic_alpha, device), 0.0).to(dtype)
    sigma = _uniform(n, *c.elastic_sigma, device).to(dtype)
    grid = grid + elastic_offsets(n, height, width, alpha, sigma, c.elastic_sigma[1])
    warped = warp(image, label, grid, c.image_interpolation, c.label_interpolation, num_classes)
    moved = (rotate | scale_it | deform).view(n, 1, 1, 1)
    return torch.where(moved, warped[0], image), torch.where(moved, warped[1], label)


def gamma_augment(image: torch.Tensor, p: float, gamma: tuple[float, float], invert: bool) -> torch.Tensor:
    """batchgenerators' ``augment_gamma`` with ``retain_stats``, per slice with probability ``p``:
    the slice rescaled to [0, 1] is raised to gamma (below 1 or above 1, each half the time),
    mapped back, and given its old mean and std; ``invert`` does this to ``-image``."""
    n = image.shape[0]
    device = image.device
    low = _uniform(n, gamma[0], min(gamma[1], 1.0), device)
    high = _uniform(n, max(gamma[0], 1.0), gamma[1], device)
    g = torch.where(torch.rand(n, device=device) < 0.5, low, high).to(image.dtype).view(n, 1, 1, 1)
    apply = _draw(n, p, device).view(n, 1, 1, 1)
    x = -image if invert else image
    dims = (1, 2, 3)
    mean, std = x.mean(dims, keepdim=True), x.std(dims, keepdim=True)
    lo = x.amin(dims, keepdim=True)
    span = x.amax(dims, keepdim=True) - lo + 1e-7
    y = ((x - lo) / span).clamp_min(0) ** g * span + lo
    y = (y - y.mean(dims, keepdim=True)) / (y.std(dims, keepdim=True) + 1e-8) * std + mean
    y = -y if invert else y
    return torch.where(apply, y, image)


def nnunet_augment(
    image: torch.Tensor, label: torch.Tensor, c: SupStrongConfig, num_classes: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole pipeline, in nnU-Net's order: spatial, inverted gamma, gamma, mirroring."""
    image, label = spatial_augment(image, label, c, num_classes)
    image = gamma_augment(image, c.p_gamma_inverted, c.gamma, invert=True)
    image = gamma_augment(image, c.p_gamma, c.gamma, invert=False)
    if c.mirror:
        image, label = random_flip(image, label)
    return image, label


class SupStrong(Method):
    """The U-Net, labelled slices only, nnU-Net augmentation, BCE + Dice, poly schedule."""

    config_class = SupStrongConfig
    config: SupStrongConfig

    def __init__(self, config: SupStrongConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        self.net = self.build_net("unet")

    def configure_optimizers(self, train: TrainSpec, steps_per_epoch: int) -> list[OptimizerSetup]:
        """``train.optimizer`` with nnU-Net's poly schedule (power 0.9, no warm-up) over the
        run, or ``train.schedule`` with ``schedule: train``."""
        schedule = ScheduleSpec(name="poly", power=0.9) if self.config.schedule == "poly" else train.schedule
        optimizer = build_optimizer(self.param_groups(train), train)
        return [OptimizerSetup(optimizer, build_scheduler(optimizer, schedule, train.epochs, steps_per_epoch))]

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """CE + soft Dice on the augmented labelled slices; unlabelled ones are ignored."""
        if not batch.n_labelled:
            return no_loss(batch.image)
        image, label = nnunet_augment(batch.image[batch.lab], batch.label[batch.lab], self.config, self.num_classes)
        logits = self.net(image)[0]
        bce = cross_entropy(logits, label)
        dice = dice_loss(probabilities(logits), label)
        return {"bce": bce, "dice": dice, "loss": bce + dice}
