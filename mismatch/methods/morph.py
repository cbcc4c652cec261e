"""Morph: the MisMatch paper's hand-crafted counterpart of MisMatch.

A U-Net with two standard decoders (the ``mm-a`` network: the paper's "two-headed U-net with
standard convolutional blocks"). After every decoder stage, decoder 1's features are eroded
(a 3x3 min-pool, ``-maxpool(-x)``) and decoder 2's dilated (a 3x3 max-pool), stride 1, so the
first decoder's foreground shrinks and the second's grows: paired predictions of lower and
higher confidence made by fixed morphology instead of MisMatch's learned attention. Training
is MisMatch's: Dice on each decoder for labelled slices, ``alpha`` x symmetric MSE between the
decoders for unlabelled ones, plus Gaussian input noise. The morphology is part of the
network, so it also runs at test time, where the prediction is the decoders' mean probability.
With C > 2 classes each decoder outputs C channels (softmax; multi-class soft Dice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mismatch.losses import probabilities, symmetric_mse
from mismatch.methods.augment import gaussian_noise
from mismatch.methods.base import Batch, Method
from mismatch.methods.configs.morph import MorphConfig
from mismatch.methods.sup import dice_per_decoder
from mismatch.models.decoders import FeatureTransform


def dilate(x: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Grey-scale dilation: ``kernel_size`` max-pool, stride 1, same size."""
    return F.max_pool2d(x, kernel_size, stride=1, padding=kernel_size // 2)


def erode(x: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Grey-scale erosion: ``-maxpool(-x)``, stride 1, same size."""
    return -F.max_pool2d(-x, kernel_size, stride=1, padding=kernel_size // 2)


class Morph(Method):
    """Two standard decoders, one eroding and one dilating its features at every stage."""

    config_class = MorphConfig
    config: MorphConfig

    def __init__(self, config: MorphConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        self.net = self.build_net(config.model)

    def transforms(self) -> list[FeatureTransform]:
        """The feature hooks of decoder 1 (erosion) and decoder 2 (dilation)."""
        k, stages = self.config.kernel_size, set(self.config.stages)

        def eroding(index: int, y: torch.Tensor) -> torch.Tensor:
            return erode(y, k) if index in stages else y

        def dilating(index: int, y: torch.Tensor) -> torch.Tensor:
            return dilate(y, k) if index in stages else y

        return [eroding, dilating]

    def logits(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Both decoders' logits ``(B, K, H, W)``, with their morphology."""
        features = self.net.encoder(image)
        return [dec(features, feature_transform=t) for dec, t in zip(self.net.decoders, self.transforms())]

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Dice on each decoder for labelled slices, alpha x symmetric MSE for unlabelled."""
        logits = self.logits(gaussian_noise(batch.image, self.config.noise_std))
        losses: dict[str, torch.Tensor] = {}
        lab, unl = batch.lab, batch.unl
        if batch.n_labelled:
            losses["dice"] = dice_per_decoder([lg[lab] for lg in logits], batch.label[lab])
        if batch.n_unlabelled:
            p1, p2 = (probabilities(lg[unl]) for lg in logits)
            losses["consistency"] = self.config.alpha * symmetric_mse(p1, p2)
        losses["loss"] = sum(losses.values())
        return losses

    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Mean of the eroding and the dilating decoder's probabilities."""
        return torch.stack(self.decoder_probabilities(image)).mean(dim=0)

    def decoder_probabilities(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The eroding and the dilating decoder's probabilities."""
        return [probabilities(lg) for lg in self.logits(image)]

    def decoder_names(self) -> list[str]:
        """Decoder 1 erodes its features, decoder 2 dilates them."""
        return ["erosion", "dilation"]
