"""MisMatch (Xu et al.): a two-decoder network trained with Dice on labelled slices and a
consistency term between the positive- and negative-attention decoders on unlabelled ones."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from mismatch.config import MethodConfig
from mismatch.losses import soft_dice_loss, symmetric_mse
from mismatch.methods.base import Batch, Method, register_method
from mismatch.models import build_model


class MisMatchConfig(MethodConfig):
    """Settings of MisMatch. Defaults follow the paper.

    ``alpha_schedule: decay`` reproduces the authors' code: from epoch ``alpha_decay_start``
    on, alpha is multiplied by ``alpha_decay_beta`` every epoch (the paper keeps it constant).
    """

    name: Literal["mismatch"] = "mismatch"
    model: Literal["mm", "mm-a", "mm-b", "mm-c"] = "mm"
    width: int = Field(24, ge=1)
    alpha: float = Field(0.002, ge=0)
    alpha_schedule: Literal["constant", "decay"] = "constant"
    alpha_decay_beta: float = Field(0.5, gt=0, le=1)
    alpha_decay_start: int = Field(0, ge=0)
    negative_sigmoid: bool = False


@register_method("mismatch")
class MisMatch(Method):
    """MisMatch on one of the two-decoder networks (``mm`` or the ablations ``mm-a/b/c``)."""

    config_class = MisMatchConfig
    config: MisMatchConfig
    reference = "Xu et al. 2021, MisMatch: learning to change predictive confidences with attention (IEEE TMI)"

    def __init__(self, config: MisMatchConfig, in_channels: int) -> None:
        super().__init__(config, in_channels)
        # Only the NASB decoder has a sigmoid to switch on (mm and mm-b have one).
        extra = {"negative_sigmoid": True} if config.negative_sigmoid and config.model in ("mm", "mm-b") else {}
        self.net = build_model(config.model, in_channels=in_channels, width=config.width, **extra)

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
