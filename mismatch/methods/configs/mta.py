"""Settings of MTA (implementation: :mod:`mismatch.methods.mta`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.config import MethodConfig
from mismatch.methods.configs import NOISE_STD, register_config
from mismatch.search_space import Dimension, LogUniform


@register_config("mta")
class MTAConfig(MethodConfig):
    """Settings of MTA. ``alpha`` weighs the reconstruction loss under ``training: joint``.

    ``training`` is one of Chen et al.'s two multi-task strategies: ``joint`` (default; every
    step ``Dice + alpha * MSE``, the weighted loss the MisMatch paper's MTA column used) or
    ``alternating`` (steps alternate between the segmentation loss and the unweighted
    reconstruction loss; ``alpha`` is unused). Chen et al. found alternating training more
    stable and it needs no weight; docs/methods.md says why joint stays the default.
    """

    implementation: ClassVar[str] = "mismatch.methods.mta:MTA"
    spatial_dims: ClassVar[tuple[int, ...]] = (2,)
    """2D only: the reconstruction decoder is a 2D decoder (Conv2d, bilinear upsampling)."""
    reference: ClassVar[str] = (
        "Chen et al. 2019, Multi-task attention-based semi-supervised learning for medical image segmentation (MICCAI)"
    )
    summary: ClassVar[str] = "reconstruction of the attention-separated image"
    search_space: ClassVar[dict[str, Dimension]] = {
        "alpha": LogUniform(0.1, 10, source="Chen et al. 2019 give no sweep: a decade either side of 1"),
    }

    name: Literal["mta"] = "mta"
    width: int = Field(24, ge=1)
    alpha: float = Field(1.0, ge=0)
    noise_std: float = Field(NOISE_STD, ge=0)
    training: Literal["joint", "alternating"] = "joint"

    identity_defaults: ClassVar[dict[str, object]] = {"training": "joint"}
