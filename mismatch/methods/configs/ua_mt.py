"""Settings of UA-MT (implementation: :mod:`mismatch.methods.ua_mt`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.config import MethodConfig
from mismatch.methods.configs import NOISE_STD, register_config
from mismatch.search_space import Dimension, LogUniform, Uniform


@register_config("ua-mt")
class UAMTConfig(MethodConfig):
    """Settings of UA-MT. ``alpha`` is the consistency weight after its ramp-up.

    ``rampup_epochs`` (weight) and ``threshold_rampup_epochs`` (uncertainty threshold) of
    ``None`` ramp over the whole run (``train.epochs``), as the authors' and SSL4MIS's code do.
    """

    implementation: ClassVar[str] = "mismatch.methods.ua_mt:UAMT"
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    """2D slices and 3D patches (its authors' own setting is the 3D Left Atrium)."""
    reference: ClassVar[str] = (
        "Yu et al. 2019, Uncertainty-aware self-ensembling model for semi-supervised 3D left atrium "
        "segmentation (MICCAI); code: github.com/yulequan/UA-MT, SSL4MIS"
    )
    summary: ClassVar[str] = "MSE to the EMA teacher where the teacher's MC-dropout entropy is below a ramped threshold"
    search_space: ClassVar[dict[str, Dimension]] = {
        "alpha": LogUniform(0.01, 1.0, source="Yu et al. 2019 / SSL4MIS: 0.1; a decade either side"),
        "ema_decay": Uniform(0.99, 0.999, source="Yu et al. 2019: 0.99; Tarvainen and Valpola 2017: up to 0.999"),
    }

    name: Literal["ua-mt"] = "ua-mt"
    width: int = Field(24, ge=1)
    alpha: float = Field(0.1, ge=0)
    rampup_epochs: int | None = Field(None, ge=0)
    ema_decay: float = Field(0.99, ge=0, le=1)
    noise_std: float = Field(NOISE_STD, ge=0)
    noise_clip: float = Field(0.2, ge=0)
    passes: int = Field(8, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    threshold_start: float = Field(0.75, ge=0, le=1)
    threshold_rampup_epochs: int | None = Field(None, ge=0)
    predict_with: Literal["teacher", "student"] = "teacher"
