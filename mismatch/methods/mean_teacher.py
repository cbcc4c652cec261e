"""Mean Teacher (Tarvainen and Valpola 2017) on the U-Net backbone.

The student is trained by gradient descent; the teacher is an exponential moving average of
the student's weights (``t = d * t + (1 - d) * s`` after every optimiser step) and receives no
gradient. Both see the slice with independent Gaussian input noise; on unlabelled slices the
student's probabilities are pulled toward the teacher's by an MSE whose weight ramps up as
``alpha * exp(-5 (1 - t)^2)``, ``t = epoch / rampup_epochs`` clipped to [0, 1].
"""

from __future__ import annotations

import copy
import math

import torch

from mismatch.losses import soft_dice_loss
from mismatch.methods.augment import gaussian_noise
from mismatch.methods.base import Batch, Method
from mismatch.methods.configs.mean_teacher import MeanTeacherConfig
from mismatch.models import build_model


def sigmoid_rampup(epoch: int, rampup_epochs: int) -> float:
    """Tarvainen and Valpola's ramp-up ``exp(-5 (1 - t)^2)``, ``t = epoch / rampup_epochs``.

    ``epoch`` is 0-based; the ramp reaches 1 at ``epoch == rampup_epochs`` and stays there.
    ``rampup_epochs == 0`` means no ramp (always 1).
    """
    if rampup_epochs <= 0:
        return 1.0
    t = min(max(epoch / rampup_epochs, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class MeanTeacher(Method):
    """A U-Net student and its exponential-moving-average teacher."""

    config_class = MeanTeacherConfig
    config: MeanTeacherConfig

    def __init__(self, config: MeanTeacherConfig, in_channels: int) -> None:
        super().__init__(config, in_channels)
        self.student = build_model("unet", in_channels=in_channels, width=config.width)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)


    def consistency_weight(self, epoch: int) -> float:
        """The ramped consistency weight used in ``epoch`` (0-based)."""
        return self.config.alpha * sigmoid_rampup(epoch, self.config.rampup_epochs)

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Dice on labelled slices; ramped MSE to the teacher on unlabelled ones."""
        noise = self.config.noise_std
        student_logits = self.student(gaussian_noise(batch.image, noise))[0]  # (B, 1, H, W)
        prob = torch.sigmoid(student_logits)
        losses: dict[str, torch.Tensor] = {}
        lab, unl = batch.lab, batch.unl
        if batch.n_labelled:
            losses["dice"] = soft_dice_loss(prob[lab], batch.label[lab])
        if batch.n_unlabelled:
            with torch.no_grad():
                target = torch.sigmoid(self.teacher(gaussian_noise(batch.image[unl], noise))[0])
            losses["consistency"] = self.consistency_weight(epoch) * torch.mean((prob[unl] - target) ** 2)
        losses["loss"] = sum(losses.values())
        return losses

    @torch.no_grad()
    def after_step(self) -> None:
        """EMA update of the teacher, ``t = d * t + (1 - d) * s``; buffers are copied."""
        d = self.config.ema_decay
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(d).add_(s.detach(), alpha=1.0 - d)
        for t, s in zip(self.teacher.buffers(), self.student.buffers()):
            t.copy_(s)

    def _predictor(self) -> torch.nn.Module:
        return self.teacher if self.config.predict_with == "teacher" else self.student

    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """The teacher's probability (or the student's, with ``predict_with: student``)."""
        return self._predictor().probabilities(image)

    def inference_parameters(self) -> int:
        """Parameters of the one U-Net used at test time (teacher and student are the same size)."""
        return sum(p.numel() for p in self._predictor().parameters())
