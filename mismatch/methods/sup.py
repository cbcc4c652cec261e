"""Supervised baselines of the MisMatch paper: Sup1 (U-Net) and Sup2 (a MisMatch network),
trained on labelled slices (or 3D patches) only, with flip and Gaussian-noise augmentation."""

from __future__ import annotations

import torch

from mismatch.losses import dice_loss, probabilities
from mismatch.methods.augment import gaussian_noise, random_flip
from mismatch.methods.base import Batch, Method
from mismatch.methods.configs import NOISE_STD
from mismatch.methods.configs.sup import Sup1Config, Sup2Config

__all__ = ["NOISE_STD", "Sup1", "Sup1Config", "Sup2", "Sup2Config", "dice_per_decoder", "no_loss"]


def no_loss(reference: torch.Tensor) -> dict[str, torch.Tensor]:
    """A zero ``"loss"`` that can be backpropagated, for a batch with nothing to learn from."""
    return {"loss": torch.zeros((), device=reference.device, requires_grad=True)}


def dice_per_decoder(logits: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    """Sum over decoders of the soft Dice loss of their probabilities (MisMatch's labelled loss;
    sigmoid of one channel, else softmax and :func:`mismatch.losses.dice_loss` over the classes)."""
    return sum(dice_loss(probabilities(lg), label) for lg in logits)


class _Supervised(Method):
    """Shared step: augment the labelled slices, soft Dice on every decoder's output."""

    config: Sup1Config | Sup2Config
    net: torch.nn.Module

    def augment(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random flips (image and label alike), then Gaussian noise on the image."""
        if self.config.flip:
            image, label = random_flip(image, label)
        return gaussian_noise(image, self.config.noise_std), label

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Soft Dice on each decoder for the labelled slices; unlabelled ones are ignored."""
        lab = batch.lab
        if not batch.n_labelled:
            return no_loss(batch.image)
        image, label = self.augment(batch.image[lab], batch.label[lab])
        dice = dice_per_decoder(self.net(image), label)
        return {"dice": dice, "loss": dice}


class Sup1(_Supervised):
    """Sup1: the U-Net backbone, supervised only."""

    config_class = Sup1Config

    def __init__(self, config: Sup1Config, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        self.net = self.build_net("unet")


class Sup2(_Supervised):
    """Sup2: a two-decoder MisMatch network (``mm`` or ``mm-a/b/c``), supervised only."""

    config_class = Sup2Config

    def __init__(self, config: Sup2Config, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        self.net = self.build_net(config.model, negative_sigmoid=config.negative_sigmoid)
