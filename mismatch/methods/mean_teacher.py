"""Mean Teacher (Tarvainen and Valpola 2017) on the U-Net backbone.

The student is trained by gradient descent; the teacher is an exponential moving average of
the student's weights (``t = d * t + (1 - d) * s`` after every optimiser step) and receives no
gradient. Both see the slice with independent Gaussian input noise; on unlabelled slices the
student's probabilities are pulled toward the teacher's by an MSE whose weight ramps up as
``alpha * exp(-5 (1 - t)^2)``, ``t = epoch / rampup_epochs`` clipped to [0, 1].
"""

from __future__ import annotations

import math

import torch

from mismatch.losses import dice_loss, probabilities
from mismatch.methods.augment import gaussian_noise
from mismatch.methods.base import Batch
from mismatch.methods.configs.mean_teacher import MeanTeacherConfig
from mismatch.methods.teacher import TeacherStudent


def sigmoid_rampup(epoch: int, rampup_epochs: int) -> float:
    """Tarvainen and Valpola's ramp-up ``exp(-5 (1 - t)^2)``, ``t = epoch / rampup_epochs``.

    ``epoch`` is 0-based; the ramp reaches 1 at ``epoch == rampup_epochs`` and stays there.
    ``rampup_epochs == 0`` means no ramp (always 1).
    """
    if rampup_epochs <= 0:
        return 1.0
    t = min(max(epoch / rampup_epochs, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class MeanTeacher(TeacherStudent):
    """A U-Net student and its exponential-moving-average teacher."""

    config_class = MeanTeacherConfig
    config: MeanTeacherConfig

    def consistency_weight(self, epoch: int) -> float:
        """The ramped consistency weight used in ``epoch`` (0-based)."""
        return self.config.alpha * sigmoid_rampup(epoch, self.config.rampup_epochs)

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Dice on labelled slices; ramped MSE to the teacher on unlabelled ones."""
        noise = self.config.noise_std
        student_logits = self.student(gaussian_noise(batch.image, noise))[0]  # (B, K, *spatial)
        prob = probabilities(student_logits)
        losses: dict[str, torch.Tensor] = {}
        lab, unl = batch.lab, batch.unl
        if batch.n_labelled:
            losses["dice"] = dice_loss(prob[lab], batch.label[lab])
        if batch.n_unlabelled:
            with torch.no_grad():
                target = probabilities(self.teacher(gaussian_noise(batch.image[unl], noise))[0])
            losses["consistency"] = self.consistency_weight(epoch) * torch.mean((prob[unl] - target) ** 2)
        losses["loss"] = sum(losses.values())
        return losses
