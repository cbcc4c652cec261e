"""Settings of Morph (implementation: :mod:`mismatch.methods.morph`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.methods.configs import NOISE_STD, NetworkChoice, register_config
from mismatch.search_space import Choice, Dimension, LogUniform


@register_config("morph")
class MorphConfig(NetworkChoice):
    """Settings of Morph. ``alpha`` and the consistency follow MisMatch's; ``stages`` are the
    decoder stages (0 deepest .. 3 last) whose output is eroded / dilated. The network must
    have two standard (plain-block) decoders: the morphology replaces the attention."""

    implementation: ClassVar[str] = "mismatch.methods.morph:Morph"
    spatial_dims: ClassVar[tuple[int, ...]] = (2,)
    """2D only: the erosion and dilation are 2D max-pools of the decoder features."""
    reference: ClassVar[str] = "Xu et al. 2021 (MisMatch), Morph baseline: erosion and dilation of decoder features"
    summary: ClassVar[str] = "symmetric MSE between the eroding and the dilating decoder"
    search_space: ClassVar[dict[str, Dimension]] = {
        "alpha": LogUniform(1e-4, 1e-2, source="Xu et al. 2021: MisMatch's alpha range (Morph is its baseline)"),
        "kernel_size": Choice((3, 5, 7), source="Xu et al. 2021: 3x3 morphology; 5 and 7 are the wider kernels this config accepts"),
    }
    requires: ClassVar[dict] = {"decoders": 2, "decoder_blocks": ("plain", "plain")}

    name: Literal["morph"] = "morph"
    model: str = "mm-a"
    width: int = Field(24, ge=1)
    alpha: float = Field(0.002, ge=0)
    noise_std: float = Field(NOISE_STD, ge=0)
    kernel_size: Literal[3, 5, 7] = 3
    stages: tuple[Literal[0, 1, 2, 3], ...] = Field((0, 1, 2, 3), min_length=1)
