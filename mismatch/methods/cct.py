"""Cross-consistency training, CCT (Ouali et al. 2020), on the U-Net backbone.

A shared encoder, the U-Net's decoder as the main decoder and ``K`` auxiliary decoders of the
same architecture. The main decoder always reads the clean encoder features; auxiliary decoder
``k`` reads a perturbed copy of ALL encoder features (skips and bridge: perturbing the bridge
alone would let a U-Net decoder route around it through the clean skips), with its own
perturbation. On unlabelled slices each auxiliary prediction is pulled toward the main
decoder's detached prediction by an MSE; the weight ramps up as in Ouali's code
(``alpha * exp(-5 (1 - t)^2)``). At test time only the encoder and main decoder run: a U-Net.

Perturbations (Ouali et al., Sec. 3.2), one per auxiliary decoder:

- ``feature-noise``: ``z + z * n``, ``n ~ U(-0.3, 0.3)`` elementwise;
- ``feature-drop``: zero the positions whose channel-mean activation exceeds ``gamma`` times
  its maximum, ``gamma ~ U(0.7, 0.9)`` per slice (drops the most activated regions);
- ``dropout``: spatial dropout (whole channels), p = ``dropout_rate`` (0.3, Ouali's code);
- ``object-masking`` / ``context-masking``: keep only the context / only the objects of the
  main decoder's (detached) prediction ``p >= 0.5``, resized to each feature's resolution.

With C > 2 classes the decoders output C channels, the consistency compares class
probabilities and the predicted objects are the pixels whose argmax is not the background.

Not implemented: VAT (one extra forward/backward per step for the adversarial direction) and
guided cutout (needs connected-component boxes of the prediction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mismatch.losses import dice_loss, hard_labels, probabilities
from mismatch.methods.base import Batch, Method
from mismatch.methods.configs.cct import CCTConfig
from mismatch.methods.mean_teacher import sigmoid_rampup
from mismatch.models import UNetDecoder

FEATURE_NOISE = 0.3
FEATURE_DROP_RANGE = (0.7, 0.9)

Perturbation = Callable[[list[torch.Tensor], torch.Tensor], list[torch.Tensor]]


def feature_noise(features: list[torch.Tensor], prob: torch.Tensor) -> list[torch.Tensor]:
    """Multiplicative uniform noise ``z + z * U(-0.3, 0.3)``."""
    return [z + z * (torch.rand_like(z) * 2 - 1) * FEATURE_NOISE for z in features]


def feature_drop(features: list[torch.Tensor], prob: torch.Tensor) -> list[torch.Tensor]:
    """Zero the most activated positions (channel mean above ``gamma * max``)."""
    out = []
    lo, hi = FEATURE_DROP_RANGE
    for z in features:
        attention = z.mean(dim=1, keepdim=True)  # (B, 1, h, w)
        peak = attention.amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1, 1)
        gamma = lo + (hi - lo) * torch.rand(z.shape[0], 1, 1, 1, device=z.device, dtype=z.dtype)
        out.append(z * (attention < gamma * peak).to(z.dtype))
    return out


def dropout(features: list[torch.Tensor], prob: torch.Tensor, rate: float = 0.3) -> list[torch.Tensor]:
    """Spatial dropout (whole channels) at ``rate``, always on (it is a training perturbation)."""
    return [F.dropout2d(z, p=rate, training=True) for z in features]


def _object_mask(z: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    objects = prob >= 0.5 if prob.shape[1] == 1 else hard_labels(prob) > 0  # foreground pixels
    return F.interpolate(objects.to(z.dtype), size=z.shape[-2:], mode="nearest")  # (B, 1, h, w)


def object_masking(features: list[torch.Tensor], prob: torch.Tensor) -> list[torch.Tensor]:
    """Mask out the predicted objects, keeping their context."""
    return [z * (1 - _object_mask(z, prob)) for z in features]


def context_masking(features: list[torch.Tensor], prob: torch.Tensor) -> list[torch.Tensor]:
    """Mask out the context, keeping the predicted objects."""
    return [z * _object_mask(z, prob) for z in features]


PERTURBATIONS: dict[str, Perturbation] = {
    "feature-noise": feature_noise,
    "feature-drop": feature_drop,
    "dropout": dropout,
    "object-masking": object_masking,
    "context-masking": context_masking,
}


class CCT(Method):
    """CCT: a U-Net whose encoder also feeds ``K`` auxiliary decoders through perturbations."""

    config_class = CCTConfig
    config: CCTConfig

    def __init__(self, config: CCTConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        self.net = self.build_net("unet")  # encoder + main decoder
        self.aux = nn.ModuleList(UNetDecoder(config.width, self.out_channels) for _ in config.perturbations)


    def consistency_weight(self, epoch: int) -> float:
        """The ramped unsupervised weight used in ``epoch`` (0-based)."""
        return self.config.alpha * sigmoid_rampup(epoch, self.config.rampup_epochs)

    def aux_logits(self, features: Sequence[torch.Tensor], main_prob: torch.Tensor) -> list[torch.Tensor]:
        """Each auxiliary decoder's logits on its own perturbation of ``features``."""
        return [
            decoder(self._perturb(name, list(features), main_prob))
            for name, decoder in zip(self.config.perturbations, self.aux)
        ]

    def _perturb(self, name: str, features: list[torch.Tensor], main_prob: torch.Tensor) -> list[torch.Tensor]:
        if name == "dropout":
            return dropout(features, main_prob, self.config.dropout_rate)
        return PERTURBATIONS[name](features, main_prob)

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Dice on the main decoder for labelled slices; aux-to-main MSE for unlabelled ones."""
        features = self.net.encoder(batch.image)  # [x0, x1, x2, x3, bridge]
        prob = probabilities(self.net.decoders[0](features))  # (B, K, H, W)
        losses: dict[str, torch.Tensor] = {}
        lab, unl = batch.lab, batch.unl
        if batch.n_labelled:
            losses["dice"] = dice_loss(prob[lab], batch.label[lab])
        if batch.n_unlabelled:
            target = prob[unl].detach()
            aux = self.aux_logits([z[unl] for z in features], target)
            mse = sum(torch.mean((probabilities(lg) - target) ** 2) for lg in aux) / len(aux)
            losses["consistency"] = self.consistency_weight(epoch) * mse
        losses["loss"] = sum(losses.values())
        return losses
