"""MisMatch (Xu et al.): a two-decoder network trained with Dice on labelled slices and a
consistency term between the positive- and negative-attention decoders on unlabelled ones."""

from __future__ import annotations

import torch

from mismatch.losses import soft_dice_loss, symmetric_mse
from mismatch.methods.base import Batch, Method, network_options
from mismatch.methods.configs.mismatch import MisMatchConfig
from mismatch.models import build_model


class MisMatch(Method):
    """MisMatch on one of the two-decoder networks (``mm`` or the ablations ``mm-a/b/c``)."""

    config_class = MisMatchConfig
    config: MisMatchConfig

    def __init__(self, config: MisMatchConfig, in_channels: int) -> None:
        super().__init__(config, in_channels)
        self.net = build_model(config.model, in_channels=in_channels, width=config.width,
                               **network_options(config.model, negative_sigmoid=config.negative_sigmoid))

    def alpha_at(self, epoch: int) -> float:
        """The consistency weight used in ``epoch`` (0-based)."""
        cfg = self.config
        if cfg.alpha_schedule == "constant":
            return cfg.alpha
        return cfg.alpha * cfg.alpha_decay_beta ** max(0, epoch - cfg.alpha_decay_start)

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Dice on each decoder for labelled slices, alpha x symmetric MSE for unlabelled."""
        probs = [torch.sigmoid(logits) for logits in self.net(batch.image)]  # each (B, 1, H, W)
        losses: dict[str, torch.Tensor] = {}
        lab, unl = batch.lab, batch.unl
        if batch.n_labelled:
            losses["dice"] = sum(soft_dice_loss(p[lab], batch.label[lab]) for p in probs)
        if batch.n_unlabelled:
            losses["consistency"] = self.alpha_at(epoch) * symmetric_mse(probs[0][unl], probs[1][unl])
        losses["loss"] = sum(losses.values())
        return losses
