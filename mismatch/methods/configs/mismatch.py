"""Settings of MisMatch (implementation: :mod:`mismatch.methods.mismatch`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.methods.configs import NetworkChoice, register_config
from mismatch.search_space import Dimension, LogUniform


@register_config("mismatch")
class MisMatchConfig(NetworkChoice):
    """Settings of MisMatch. Defaults follow the paper.

    ``model`` is any two-decoder network (``mm`` or the ablations ``mm-a/b/c``).
    ``alpha_schedule: decay`` reproduces the authors' code: from epoch ``alpha_decay_start``
    on, alpha is multiplied by ``alpha_decay_beta`` every epoch (the paper keeps it constant).
    """

    implementation: ClassVar[str] = "mismatch.methods.mismatch:MisMatch"
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    """2D slices and 3D patches (the 3D two-decoder networks ``mm3d*``)."""
    reference: ClassVar[str] = (
        "Xu et al. 2021, MisMatch: learning to change predictive confidences with attention (IEEE TMI)"
    )
    summary: ClassVar[str] = "symmetric MSE between the PASB and NASB decoders"
    search_space: ClassVar[dict[str, Dimension]] = {
        "alpha": LogUniform(1e-4, 1e-2, source="Xu et al. 2021: alpha = 0.002, Table IV ablates 5e-4 to 4e-3; a decade around"),
    }
    requires: ClassVar[dict] = {"decoders": 2}

    name: Literal["mismatch"] = "mismatch"
    model: str = "mm"
    width: int = Field(24, ge=1)
    alpha: float = Field(0.002, ge=0)
    alpha_schedule: Literal["constant", "decay"] = "constant"
    alpha_decay_beta: float = Field(0.5, gt=0, le=1)
    alpha_decay_start: int = Field(0, ge=0)
    negative_sigmoid: bool = False
