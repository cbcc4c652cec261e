"""FixMatch (Sohn et al. 2020) adapted to segmentation, as in the MisMatch paper.

Weak view: the slice plus Gaussian noise. Its prediction, without gradient, gives a per-pixel
pseudo-label ``p >= 0.5`` kept where the confidence ``max(p, 1 - p)`` reaches the threshold.
Strong view: RandAugment without shear (:func:`mismatch.methods.augment.rand_augment`) of the
slice; its geometric operations move the pseudo-label and the confidence mask with the image,
so every pixel keeps its own target. Unsupervised loss: binary cross-entropy between the
strong view's prediction and the pseudo-label, averaged over ALL pixels with the masked ones
counting zero (FixMatch's ``1 / (mu B)`` normalisation, per pixel), weighted by ``alpha``
(FixMatch's lambda_u). With C > 2 classes the pseudo-label is the argmax, the confidence
the largest class probability and the loss the categorical cross-entropy.
"""

from __future__ import annotations

import torch

from mismatch.losses import confidence, cross_entropy, dice_loss, probabilities
from mismatch.methods.augment import gaussian_noise, rand_augment
from mismatch.methods.base import Batch, Method
from mismatch.methods.configs.fixmatch import FixMatchConfig


def pseudo_labels(prob: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels ``prob >= 0.5`` and the mask of pixels whose confidence
    ``max(prob, 1 - prob)`` is at least ``threshold`` (both float, (B, 1, *spatial)). For C
    class channels: the argmax class and the largest class probability as the confidence."""
    if prob.shape[1] > 1:
        label = prob.argmax(dim=1, keepdim=True).to(prob.dtype)
    else:
        label = (prob >= 0.5).to(prob.dtype)
    return label, (confidence(prob) >= threshold).to(prob.dtype)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over all pixels of ``mask * CE(logits, target)`` (binary or categorical)."""
    return (mask * cross_entropy(logits, target, reduction="none")).mean()


class FixMatch(Method):
    """FixMatch on the U-Net backbone: confident weak-view pseudo-labels train the strong view."""

    config_class = FixMatchConfig
    config: FixMatchConfig

    def __init__(self, config: FixMatchConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        self.net = self.build_net("unet")


    def strong_view(
        self, image: torch.Tensor, label: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RandAugment of ``image``; the same geometric transforms applied to label and mask."""
        cfg = self.config
        targets = torch.cat([label, mask], dim=1)  # (B, 2, H, W): moved together, pixel for pixel
        image, targets = rand_augment(image, targets, cfg.ra_n_ops, cfg.ra_max_magnitude, cfg.ra_ops)
        return image, targets[:, :1], targets[:, 1:]

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Dice on the weak view of labelled slices; masked BCE on strong views of unlabelled ones."""
        losses: dict[str, torch.Tensor] = {}
        lab, unl = batch.lab, batch.unl
        if batch.n_labelled:
            weak = gaussian_noise(batch.image[lab], self.config.noise_std)
            losses["dice"] = dice_loss(probabilities(self.net(weak)[0]), batch.label[lab])
        if batch.n_unlabelled:
            image = batch.image[unl]
            with torch.no_grad():
                weak_prob = probabilities(self.net(gaussian_noise(image, self.config.noise_std))[0])
                label, mask = pseudo_labels(weak_prob, self.config.threshold)
                strong, label, mask = self.strong_view(image, label, mask)
            logits = self.net(strong)[0]
            losses["pseudo_label"] = self.config.alpha * masked_bce(logits, label, mask)
        losses["loss"] = sum(losses.values())
        return losses
