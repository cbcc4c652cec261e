"""UA-MT (Yu et al. 2019): a mean teacher whose consistency is masked by its uncertainty.

The student is trained on ``0.5 (BCE + Dice)`` on labelled slices; on unlabelled slices its
probability is pulled toward the EMA teacher's (one noisy teacher pass) by an MSE that counts
only the pixels where the teacher is certain: the teacher makes ``passes`` (T = 8) stochastic
forward passes, each with clipped Gaussian input noise and dropout, and the predictive
entropy of their mean probability (binary: at most ln 2) must lie below a threshold ramped
from ``threshold_start`` (0.75) to 1 of ln 2. The consistency weight ramps up as Mean
Teacher's. The U-Net has no dropout layer, so the method applies ``dropout2d`` to the
bottleneck features between ``net.encoder`` and ``net.decoders[0]`` (training only: test-time
prediction is the plain network), for student and teacher alike as the authors' V-Net does.

With C > 2 classes the supervised loss is ``0.5 (CE + Dice)`` (categorical cross-entropy,
multi-class soft Dice), the entropy is that of the class distribution and the consistency the
MSE of the class probabilities over the kept pixels and the classes; the threshold keeps its
ln 2 scale, as SSL4MIS's multi-class (ACDC) UA-MT does. In 3D the bottleneck dropout is
``dropout3d``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mismatch.losses import cross_entropy, dice_loss, entropy, probabilities
from mismatch.methods.base import Batch
from mismatch.methods.configs.ua_mt import UAMTConfig
from mismatch.methods.mean_teacher import sigmoid_rampup
from mismatch.methods.teacher import TeacherStudent

LN2 = math.log(2.0)
EPS = 1e-6  # inside the logarithm of the entropy, as the authors' code


def binary_entropy(prob: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy (nats) of the two-class distribution ``(p, 1 - p)``; at most ln 2."""
    return -(prob * torch.log(prob + EPS) + (1 - prob) * torch.log(1 - prob + EPS))


def uncertainty_threshold(epoch: int, rampup_epochs: int, start: float = 0.75) -> float:
    """``(start + (1 - start) * sigmoid_rampup(epoch, rampup_epochs)) * ln 2`` (SSL4MIS's ramp)."""
    return (start + (1.0 - start) * sigmoid_rampup(epoch, rampup_epochs)) * LN2


def certainty_mask(entropy: torch.Tensor, threshold: float) -> torch.Tensor:
    """1.0 where ``entropy < threshold`` (the teacher is certain enough), else 0.0."""
    return (entropy < threshold).to(entropy.dtype)


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(mask (s - t)^2) / (sum(mask) + 1e-16)``: the mean squared difference over the
    kept pixels (for two classes the authors' softmax MSE over both channels is this value).
    A (B, 1, ...) mask is broadcast over C class channels, so the mean also runs over classes
    (the authors' ``sum(mask * mse) / (C sum(mask))``)."""
    mask = mask.expand_as(student)
    return torch.sum(mask * (student - teacher) ** 2) / (torch.sum(mask) + 1e-16)


def supervised_terms(logits: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"bce": 0.5 CE, "dice": 0.5 soft Dice}`` on logits: the authors' (and SSL4MIS's)
    supervised loss ``0.5 (CE + Dice)``, its two halves logged apart (binary cross-entropy for
    one channel, categorical for C; the key stays ``bce``)."""
    bce = cross_entropy(logits, label)
    return {"bce": 0.5 * bce, "dice": 0.5 * dice_loss(probabilities(logits), label)}


class UAMT(TeacherStudent):
    """A U-Net student, its EMA teacher, and the teacher's MC-dropout uncertainty mask."""

    config_class = UAMTConfig
    config: UAMTConfig

    def _ramp(self, setting: int | None) -> int:
        return self.run_epochs if setting is None else setting

    def consistency_weight(self, epoch: int) -> float:
        """The ramped consistency weight used in ``epoch`` (0-based)."""
        return self.config.alpha * sigmoid_rampup(epoch, self._ramp(self.config.rampup_epochs))

    def threshold(self, epoch: int) -> float:
        """The entropy threshold used in ``epoch`` (0-based)."""
        return uncertainty_threshold(epoch, self._ramp(self.config.threshold_rampup_epochs), self.config.threshold_start)

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.noise_std == 0:
            return x
        return x + torch.clamp(c.noise_std * torch.randn_like(x), -c.noise_clip, c.noise_clip)

    def _logits(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One pass with dropout on the bottleneck features (when training)."""
        features = net.encoder(x)
        drop = F.dropout3d if features[-1].ndim == 5 else F.dropout2d
        features[-1] = drop(features[-1], self.config.dropout, training=self.training)
        return net.decoders[0](features)

    @torch.no_grad()
    def teacher_entropy(self, image: torch.Tensor) -> torch.Tensor:
        """Entropy (B, 1, *spatial) of the mean of T noisy, dropped-out teacher probabilities (one batched pass)."""
        t = self.config.passes
        repeated = image.repeat(t, *([1] * (image.ndim - 1)))
        probs = probabilities(self._logits(self.teacher, self._noisy(repeated)))
        return entropy(probs.view(t, *image.shape[:1], *probs.shape[1:]).mean(dim=0), EPS)

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """0.5 (BCE + Dice) on labelled slices; masked, ramped MSE to the teacher on unlabelled ones."""
        logits = self._logits(self.student, batch.image)
        losses: dict[str, torch.Tensor] = {}
        lab, unl = batch.lab, batch.unl
        if batch.n_labelled:
            losses.update(supervised_terms(logits[lab], batch.label[lab]))
        if batch.n_unlabelled:
            image = batch.image[unl]
            with torch.no_grad():
                target = probabilities(self._logits(self.teacher, self._noisy(image)))
                mask = certainty_mask(self.teacher_entropy(image), self.threshold(epoch))
            consistency = masked_mse(probabilities(logits[unl]), target, mask)
            losses["consistency"] = self.consistency_weight(epoch) * consistency
            losses["certain_fraction"] = mask.mean().detach()
        losses["loss"] = sum(v for k, v in losses.items() if k != "certain_fraction")
        return losses
