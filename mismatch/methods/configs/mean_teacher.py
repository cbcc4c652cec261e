"""Settings of Mean Teacher (implementation: :mod:`mismatch.methods.mean_teacher`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.config import MethodConfig
from mismatch.methods.configs import NOISE_STD, register_config
from mismatch.search_space import Dimension, LogUniform, Uniform


@register_config("mean-teacher")
class MeanTeacherConfig(MethodConfig):
    """Settings of Mean Teacher. ``alpha`` is the consistency weight after the ramp-up."""

    implementation: ClassVar[str] = "mismatch.methods.mean_teacher:MeanTeacher"
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    """2D slices and 3D patches (Gaussian noise only)."""
    reference: ClassVar[str] = "Tarvainen and Valpola 2017, Mean teachers are better role models (NeurIPS)"
    summary: ClassVar[str] = "MSE between student and teacher probabilities"
    search_space: ClassVar[dict[str, Dimension]] = {
        "ema_decay": Uniform(0.99, 0.999, source="Tarvainen and Valpola 2017: 0.99 in the ramp-up, 0.999 after"),
        "alpha": LogUniform(0.01, 100, source="Tarvainen and Valpola 2017: 100 (CIFAR-10); Yu et al. 2019 (UA-MT): 0.1"),
    }

    name: Literal["mean-teacher"] = "mean-teacher"
    width: int = Field(24, ge=1)
    alpha: float = Field(0.1, ge=0)
    rampup_epochs: int = Field(10, ge=0)
    ema_decay: float = Field(0.99, ge=0, le=1)
    noise_std: float = Field(NOISE_STD, ge=0)
    predict_with: Literal["teacher", "student"] = "teacher"
