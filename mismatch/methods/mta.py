"""Multi-task attention-based semi-supervised segmentation, MTA (Chen et al. 2019, "MASSL").

A shared encoder (the U-Net's), the U-Net decoder for segmentation, and a reconstruction
decoder. The attention of Chen et al. separates the reconstruction of the image areas of the
two classes: the reconstruction decoder outputs ``2C`` channels, the foreground-attended image
``x * a`` and the background-attended image ``x * (1 - a)``, where the attention ``a`` is the
label on labelled slices and the segmentation decoder's detached probability on unlabelled
ones. The reconstruction decoder reads the bridge only (no skip connections: with the
full-resolution skip it could copy the input without the encoder learning anything). Inputs
get Gaussian noise; the reconstruction targets are the clean slice's attended images.

Loss (``training: joint``, default): labelled slices ``Dice + alpha * MSE``, unlabelled slices
``alpha * MSE``. ``training: alternating`` (Chen et al.'s other strategy): optimiser steps
alternate between the segmentation loss (Dice on the step's labelled slices) and the
reconstruction loss (unweighted MSE on all its slices); a segmentation turn whose batch has no
labelled slice trains the reconstruction instead. The turn is kept in the state dict, so a
resumed trial continues the alternation. At test time only the segmentation path runs: a U-Net.

With C > 2 classes the attention is the foreground probability ``1 - p(background)`` (the
label ``y > 0`` on labelled slices), so the two reconstructed images stay foreground and
background; the segmentation loss is the multi-class soft Dice.
"""

from __future__ import annotations

import torch
from torch import nn

from mismatch.losses import dice_loss, probabilities
from mismatch.methods.augment import gaussian_noise
from mismatch.methods.base import Batch, Method
from mismatch.methods.configs.mta import MTAConfig
from mismatch.models import DoubleConv
from mismatch.models.decoders import upsample2x


class ReconstructionDecoder(nn.Module):
    """Bridge ``(B, 8w, H/8, W/8)`` to an image ``(B, out_channels, H, W)``, without skips.

    Four double-conv stages ``8w -> 4w -> 2w -> w -> w`` with a bilinear x2 upsampling after
    each of the first three (U-Net order), then a 1x1 conv (with bias).
    """

    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__()
        w = width
        self.stages = nn.ModuleList(
            DoubleConv(i, o) for i, o in zip([8 * w, 4 * w, 2 * w, w], [4 * w, 2 * w, w, w])
        )
        self.head = nn.Conv2d(w, out_channels, kernel_size=1)

    def forward(self, bridge: torch.Tensor) -> torch.Tensor:
        y = bridge
        for index, stage in enumerate(self.stages):
            y = stage(y)
            if index < len(self.stages) - 1:
                y = upsample2x(y)
        return self.head(y)


def attended_images(image: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """``cat([x * a, x * (1 - a)])`` along channels: ``(B, 2C, H, W)`` for ``x`` ``(B, C, H, W)``."""
    return torch.cat([image * attention, image * (1 - attention)], dim=1)


def foreground(prob: torch.Tensor) -> torch.Tensor:
    """Foreground probability (B, 1, H, W): ``prob`` itself (binary), else ``1 - p(background)``."""
    return prob if prob.shape[1] == 1 else 1 - prob[:, :1]


class AlternatingTurn(nn.Module):
    """Counts alternating steps; even steps train segmentation, odd ones reconstruction.

    A module only for its extra state (the count), so checkpoints and snapshots carry it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def next(self) -> int:
        """This step's turn (0 segmentation, 1 reconstruction); advances the count."""
        turn, self.count = self.count % 2, self.count + 1
        return turn

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(self.count)

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.count = int(state)


class MTA(Method):
    """Segmentation plus attention-separated image reconstruction from a shared encoder."""

    config_class = MTAConfig
    config: MTAConfig

    def __init__(self, config: MTAConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        self.net = self.build_net("unet")  # segmentation path
        self.reconstruction = ReconstructionDecoder(config.width, 2 * in_channels)
        if config.training == "alternating":
            self.turn = AlternatingTurn()


    def reconstruction_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-slice reconstruction MSE ``(B,)`` and the segmentation probability ``(B, K, H, W)``."""
        features = self.net.encoder(gaussian_noise(batch.image, self.config.noise_std))
        prob = probabilities(self.net.decoders[0](features))
        lab = batch.labelled.view(-1, 1, 1, 1)
        label = batch.label if prob.shape[1] == 1 else (batch.label > 0).to(batch.label.dtype)
        attention = torch.where(lab, label, foreground(prob.detach()))
        error = (self.reconstruction(features[-1]) - attended_images(batch.image, attention)) ** 2
        return error.flatten(1).mean(dim=1), prob

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Joint: Dice on labelled slices plus ``alpha`` x reconstruction MSE on every slice.
        Alternating: Dice or the unweighted MSE, by turn (module docstring)."""
        if self.config.training == "alternating":
            return self.alternating_step(batch)
        reconstruction, prob = self.reconstruction_loss(batch)
        losses: dict[str, torch.Tensor] = {}
        if batch.n_labelled:
            losses["dice"] = dice_loss(prob[batch.lab], batch.label[batch.lab])
        losses["reconstruction"] = self.config.alpha * reconstruction.mean()
        losses["loss"] = sum(losses.values())
        return losses

    def alternating_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One step of alternating training: the segmentation or the reconstruction loss."""
        if self.turn.next() == 0 and batch.n_labelled:
            image = gaussian_noise(batch.image[batch.lab], self.config.noise_std)  # as in joint training
            prob = probabilities(self.net.decoders[0](self.net.encoder(image)))
            dice = dice_loss(prob, batch.label[batch.lab])
            return {"dice": dice, "loss": dice}
        reconstruction, _ = self.reconstruction_loss(batch)
        mse = reconstruction.mean()
        return {"reconstruction": mse, "loss": mse}
