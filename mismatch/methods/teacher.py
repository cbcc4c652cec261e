"""Student-teacher methods: a U-Net student and its exponential-moving-average teacher.

Mean Teacher, UA-MT and BCP share this part: the teacher starts as a copy of the student,
gets no gradient, and follows it after every optimiser step by ``t = d * t + (1 - d) * s``
(buffers copied); the network tested is the teacher or the student (``predict_with``).
"""

from __future__ import annotations

import copy

import torch

from mismatch.config import MethodConfig
from mismatch.methods.base import Method


class TeacherStudent(Method):
    """Base of methods with a U-Net ``student`` and an EMA ``teacher`` of it.

    The config needs ``width``, ``ema_decay`` and ``predict_with`` (``"teacher"`` or
    ``"student"``). :meth:`after_step` makes the EMA update; a subclass that overrides it
    calls :meth:`ema_update` itself.
    """

    def __init__(self, config: MethodConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        self.student = self.build_net("unet")
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def ema_update(self) -> None:
        """``t = d * t + (1 - d) * s`` for every parameter (``d = ema_decay``); buffers are copied."""
        d = self.config.ema_decay
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(d).add_(s.detach(), alpha=1.0 - d)
        for t, s in zip(self.teacher.buffers(), self.student.buffers()):
            t.copy_(s)

    def after_step(self) -> None:
        """The EMA update of the teacher."""
        self.ema_update()

    def _predictor(self) -> torch.nn.Module:
        return self.teacher if self.config.predict_with == "teacher" else self.student

    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """The probability of the network ``predict_with`` names (teacher or student)."""
        return self._predictor().probabilities(image)

    def inference_parameters(self) -> int:
        """Parameters of the one U-Net used at test time (teacher and student are the same size)."""
        return sum(p.numel() for p in self._predictor().parameters())
