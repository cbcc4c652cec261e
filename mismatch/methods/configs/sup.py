"""Settings of the supervised baselines Sup1 and Sup2 (implementation: :mod:`mismatch.methods.sup`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.config import MethodConfig
from mismatch.methods.configs import NOISE_STD, NetworkChoice, register_config


@register_config("sup1")
class Sup1Config(MethodConfig):
    """Settings of Sup1: a U-Net trained on labelled slices with flips and Gaussian noise."""

    implementation: ClassVar[str] = "mismatch.methods.sup:Sup1"
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    """2D slices and 3D patches (flips over every spatial axis, Gaussian noise)."""
    uses_unlabelled: ClassVar[bool] = False
    reference: ClassVar[str] = "Ronneberger et al. 2015, U-Net (MICCAI); Sup1 of Xu et al. 2021 (MisMatch)"
    summary: ClassVar[str] = "nothing (labelled slices only)"

    name: Literal["sup1"] = "sup1"
    width: int = Field(24, ge=1)
    flip: bool = True
    noise_std: float = Field(NOISE_STD, ge=0)


@register_config("sup2")
class Sup2Config(NetworkChoice):
    """Settings of Sup2: a two-decoder network (any MisMatch variant) trained like Sup1."""

    implementation: ClassVar[str] = "mismatch.methods.sup:Sup2"
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    """2D slices and 3D patches (flips over every spatial axis, Gaussian noise)."""
    uses_unlabelled: ClassVar[bool] = False
    reference: ClassVar[str] = "Xu et al. 2021 (MisMatch), Sup2: the MisMatch network without unlabelled data"
    summary: ClassVar[str] = "nothing (labelled slices only)"
    requires: ClassVar[dict] = {"decoders": 2}

    name: Literal["sup2"] = "sup2"
    model: str = "mm"
    width: int = Field(24, ge=1)
    flip: bool = True
    noise_std: float = Field(NOISE_STD, ge=0)
    negative_sigmoid: bool = False
