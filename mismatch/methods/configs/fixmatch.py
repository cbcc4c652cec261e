"""Settings of FixMatch (implementation: :mod:`mismatch.methods.fixmatch`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.config import MethodConfig
from mismatch.methods.configs import NOISE_STD, register_config
from mismatch.search_space import Dimension, LogUniform, Uniform

#: RandAugment operations, in :data:`mismatch.methods.augment.RANDAUGMENT_OPS` order (a test
#: checks that the two agree; kept here so that validating a spec does not import torch).
RANDAUGMENT_NAMES: tuple[str, ...] = (
    "identity", "brightness", "contrast", "sharpness", "gamma", "solarize", "posterize", "equalize", "noise",
    "hflip", "vflip", "rot90", "translate_x", "translate_y", "rotate",
)
RandAugmentOp = Literal[RANDAUGMENT_NAMES]  # type: ignore[valid-type]


@register_config("fixmatch")
class FixMatchConfig(MethodConfig):
    """Settings of FixMatch. ``alpha`` is lambda_u; ``ra_*`` configure the strong view."""

    implementation: ClassVar[str] = "mismatch.methods.fixmatch:FixMatch"
    spatial_dims: ClassVar[tuple[int, ...]] = (2,)
    """2D only: RandAugment's rotations, translations and photometric operations are written for slices."""
    reference: ClassVar[str] = "Sohn et al. 2020, FixMatch (NeurIPS); strong view: RandAugment, Cubuk et al. 2020"
    summary: ClassVar[str] = "masked BCE between the strong view and the weak view's confident pseudo-label"
    search_space: ClassVar[dict[str, Dimension]] = {
        "threshold": Uniform(0.8, 0.98, source="Sohn et al. 2020: tau ablated from 0.8 up, 0.95 chosen"),
        "alpha": LogUniform(0.1, 10, source="Sohn et al. 2020: lambda_u = 1; a decade either side"),
    }

    name: Literal["fixmatch"] = "fixmatch"
    width: int = Field(24, ge=1)
    alpha: float = Field(1.0, ge=0)
    threshold: float = Field(0.95, ge=0.5, le=1)
    noise_std: float = Field(NOISE_STD, ge=0)
    ra_n_ops: int = Field(2, ge=0)
    ra_max_magnitude: float = Field(1.0, ge=0, le=1)
    ra_ops: tuple[RandAugmentOp, ...] = Field(RANDAUGMENT_NAMES, min_length=1)
