"""MisMatch (Xu et al.): a two-decoder network trained with Dice on labelled slices and a
consistency term between the positive- and negative-attention decoders on unlabelled ones.

With C > 2 classes each decoder outputs C channels; the Dice is the multi-class soft Dice and
the consistency compares the decoders' class probabilities. In 3D the networks are ``mm3d*``."""

from __future__ import annotations

import torch

from mismatch.losses import dice_loss, probabilities, symmetric_mse
from mismatch.methods.base import Batch, Method
from mismatch.methods.configs.mismatch import MisMatchConfig


class MisMatch(Method):
    """MisMatch on one of the two-decoder networks (``mm`` or the ablations ``mm-a/b/c``)."""

    config_class = MisMatchConfig
    config: MisMatchConfig

    def __init__(self, config: MisMatchConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        self.net = self.build_net(config.model, negative_sigmoid=config.negative_sigmoid)

    def alpha_at(self, epoch: int) -> float:
        """The consistency weight used in ``epoch`` (0-based)."""
        cfg = self.config
        if cfg.alpha_schedule == "constant":
            return cfg.alpha
        return cfg.alpha * cfg.alpha_decay_beta ** max(0, epoch - cfg.alpha_decay_start)

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Dice on each decoder for labelled slices, alpha x symmetric MSE for unlabelled."""
        probs = [probabilities(logits) for logits in self.net(batch.image)]  # each (B, K, *spatial)
        losses: dict[str, torch.Tensor] = {}
        lab, unl = batch.lab, batch.unl
        if batch.n_labelled:
            losses["dice"] = sum(dice_loss(p[lab], batch.label[lab]) for p in probs)
        if batch.n_unlabelled:
            losses["consistency"] = self.alpha_at(epoch) * symmetric_mse(probs[0][unl], probs[1][unl])
        losses["loss"] = sum(losses.values())
        return losses
