"""Settings of Cross Pseudo Supervision (implementation: :mod:`mismatch.methods.cps`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.config import MethodConfig
from mismatch.methods.configs import register_config
from mismatch.search_space import Dimension, LogUniform


@register_config("cps")
class CPSConfig(MethodConfig):
    """Settings of CPS. ``alpha`` is lambda, the weight of the cross pseudo supervision after
    its ramp-up (``rampup_epochs``; ``None``: over the whole run, as SSL4MIS; 0: no ramp).

    ``pseudo_on`` says which slices get the cross supervision: ``all`` (the paper: labelled
    and unlabelled) or ``unlabelled`` (SSL4MIS). ``predict_with``: ``net1`` (SSL4MIS tests
    model 1) or ``mean`` (the mean of the two networks' probabilities).
    """

    implementation: ClassVar[str] = "mismatch.methods.cps:CPS"
    spatial_dims: ClassVar[tuple[int, ...]] = (2,)
    """2D only for now: its loss is dimension-free, but no 3D configuration of it (two 3D networks) is tested or tuned here."""
    reference: ClassVar[str] = (
        "Chen et al. 2021, Semi-supervised semantic segmentation with cross pseudo supervision (CVPR); "
        "medical setting: SSL4MIS"
    )
    summary: ClassVar[str] = "each of two U-Nets learns (BCE) from the other's hard pseudo-label"
    search_space: ClassVar[dict[str, Dimension]] = {
        "alpha": LogUniform(0.1, 6.0, source="SSL4MIS: 0.1 (ramped); Chen et al. 2021: 1.5 (VOC), 6 (Cityscapes)"),
    }

    name: Literal["cps"] = "cps"
    width: int = Field(24, ge=1)
    alpha: float = Field(0.1, ge=0)
    rampup_epochs: int | None = Field(None, ge=0)
    pseudo_on: Literal["all", "unlabelled"] = "all"
    predict_with: Literal["net1", "mean"] = "net1"
