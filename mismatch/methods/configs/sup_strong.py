"""Settings of the strong supervised baseline (implementation: :mod:`mismatch.methods.sup_strong`).

Probabilities and ranges are nnU-Net's 2D defaults (Isensee et al. 2021; nnU-Net v2's
``nnUNetTrainer.get_training_transforms`` and ``configure_rotation_dummyDA_mirroring_and_inital_patch_size``),
except the elastic deformation, which nnU-Net v2 switches off (``p_elastic_deform=0``): its
values here are nnU-Net v1's ``default_3D_augmentation_params`` (p 0.2, alpha 0-900, sigma 9-13).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.config import MethodConfig
from mismatch.methods.configs import register_config


@register_config("sup-strong")
class SupStrongConfig(MethodConfig):
    """Settings of sup-strong: a U-Net on labelled slices with nnU-Net-style augmentation.

    ``p_*`` are per-slice probabilities; ``rotation_deg`` the maximum absolute angle;
    ``scale`` the range of the coordinate scaling factor (> 1 zooms out, as batchgenerators);
    ``elastic_alpha`` / ``elastic_sigma`` the ranges of the displacement magnitude and of the
    Gaussian smoothing, in pixels; ``gamma`` the range of the gamma exponent. ``schedule``:
    ``poly`` (nnU-Net: ``(1 - t / T) ** 0.9`` over the run) or ``train`` (the study's
    ``train.schedule``).
    """

    implementation: ClassVar[str] = "mismatch.methods.sup_strong:SupStrong"
    spatial_dims: ClassVar[tuple[int, ...]] = (2,)
    """2D only: nnU-Net's spatial transform here (rotation, scaling, elastic field) is written for slices."""
    uses_unlabelled: ClassVar[bool] = False
    reference: ClassVar[str] = (
        "Isensee et al. 2024, nnU-Net Revisited (MICCAI); augmentation: Isensee et al. 2021, nnU-Net (Nat. Methods)"
    )
    summary: ClassVar[str] = "nothing (labelled slices only, nnU-Net augmentation, poly schedule)"

    name: Literal["sup-strong"] = "sup-strong"
    width: int = Field(24, ge=1)
    p_rotation: float = Field(0.2, ge=0, le=1)
    rotation_deg: float = Field(180.0, ge=0, le=180)
    p_scaling: float = Field(0.2, ge=0, le=1)
    scale: tuple[float, float] = (0.7, 1.4)
    p_elastic: float = Field(0.2, ge=0, le=1)
    elastic_alpha: tuple[float, float] = (0.0, 900.0)
    elastic_sigma: tuple[float, float] = (9.0, 13.0)
    p_gamma_inverted: float = Field(0.1, ge=0, le=1)
    p_gamma: float = Field(0.3, ge=0, le=1)
    gamma: tuple[float, float] = (0.7, 1.5)
    mirror: bool = True
    image_interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    label_interpolation: Literal["linear", "nearest"] = "linear"
    schedule: Literal["poly", "train"] = "poly"
