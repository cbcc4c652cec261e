"""Settings of CCT (implementation: :mod:`mismatch.methods.cct`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.config import MethodConfig
from mismatch.methods.configs import register_config
from mismatch.search_space import Dimension, LogUniform, Uniform

PerturbationName = Literal["feature-noise", "feature-drop", "dropout", "object-masking", "context-masking"]


@register_config("cct")
class CCTConfig(MethodConfig):
    """Settings of CCT: one auxiliary decoder per entry of ``perturbations``.

    ``alpha`` is Ouali's unsupervised weight w_u (30), ramped up over ``rampup_epochs``
    (Ouali: the first 10% of training, i.e. 5 of the paper's 50 epochs). ``dropout_rate`` is
    the spatial-dropout rate of the ``dropout`` perturbation: 0.3, Ouali's code (``DropOutDecoder``
    ``drop_rate=0.3``); versions before this setting used 0.5.
    """

    implementation: ClassVar[str] = "mismatch.methods.cct:CCT"
    spatial_dims: ClassVar[tuple[int, ...]] = (2,)
    """2D only: the feature-drop and object/context-masking perturbations are written for 2D feature maps."""
    reference: ClassVar[str] = (
        "Ouali et al. 2020, Semi-supervised semantic segmentation with cross-consistency training (CVPR)"
    )
    summary: ClassVar[str] = "MSE between each auxiliary decoder (perturbed features) and the main decoder"
    search_space: ClassVar[dict[str, Dimension]] = {
        "alpha": LogUniform(1, 100, source="Ouali et al. 2020: w_u = 30; half a decade either side"),
        "dropout_rate": Uniform(0.1, 0.5, source="Ouali et al. 2020 code: drop_rate 0.3; 0.5 was this project's old value"),
    }

    name: Literal["cct"] = "cct"
    width: int = Field(24, ge=1)
    alpha: float = Field(30.0, ge=0)
    rampup_epochs: int = Field(5, ge=0)
    dropout_rate: float = Field(0.3, ge=0, lt=1)
    perturbations: tuple[PerturbationName, ...] = Field(("feature-noise", "feature-drop", "dropout"), min_length=1)
