"""Settings of UniMatch, medical variant (implementation: :mod:`mismatch.methods.unimatch`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.config import MethodConfig
from mismatch.methods.configs import register_config
from mismatch.search_space import Dimension, LogUniform, Uniform


@register_config("unimatch")
class UniMatchConfig(MethodConfig):
    """Settings of UniMatch (Yang et al. 2023, ``more-scenarios/medical``).

    The weak view's pseudo-labels, kept where the confidence reaches ``threshold`` (0.95),
    train two strong views (``weight_strong`` 0.25 each) and a feature-perturbed stream
    (``weight_fp`` 0.5: ``Dropout2d(fp_dropout = 0.5)`` on every encoder feature); the loss
    is ``(supervised + alpha * (0.25 s1 + 0.25 s2 + 0.5 fp)) / 2`` with ``alpha = 1``.
    Strong views: brightness/contrast jitter (probability ``jitter_p`` 0.8, factors in
    ``[1 - jitter, 1 + jitter]``, 0.5), Gaussian blur (``blur_p`` 0.5, sigma in [0.1, 2]) and a
    CutMix box per view (``cutmix_p`` 0.5). ``schedule: poly`` trains with UniMatch's poly
    learning rate (power 0.9) whatever ``train.schedule`` says; ``train`` uses the spec's.
    """

    implementation: ClassVar[str] = "mismatch.methods.unimatch:UniMatch"
    spatial_dims: ClassVar[tuple[int, ...]] = (2,)
    """2D only: the colour jitter, blur and CutMix boxes of its strong views are written for slices."""
    reference: ClassVar[str] = (
        "Yang et al. 2023, Revisiting weak-to-strong consistency in semi-supervised semantic segmentation (CVPR)"
    )
    summary: ClassVar[str] = "masked Dice of two CutMix strong views and a feature-dropout stream to weak pseudo-labels"
    search_space: ClassVar[dict[str, Dimension]] = {
        "threshold": Uniform(0.8, 0.98, source="Yang et al. 2023: conf_thresh 0.95 (medical config); FixMatch's ablated range"),
        "alpha": LogUniform(0.1, 10, source="Yang et al. 2023: unsupervised terms weigh as the supervised one (1); a decade either side"),
        "fp_dropout": Uniform(0.3, 0.7, source="Yang et al. 2023 code: nn.Dropout2d(0.5) on the encoder features"),
    }

    name: Literal["unimatch"] = "unimatch"
    width: int = Field(24, ge=1)
    alpha: float = Field(1.0, ge=0)
    threshold: float = Field(0.95, ge=0.5, le=1)
    weight_strong: float = Field(0.25, ge=0)
    weight_fp: float = Field(0.5, ge=0)
    fp_dropout: float = Field(0.5, ge=0, lt=1)
    jitter: float = Field(0.5, ge=0, lt=1)
    jitter_p: float = Field(0.8, ge=0, le=1)
    blur_p: float = Field(0.5, ge=0, le=1)
    cutmix_p: float = Field(0.5, ge=0, le=1)
    schedule: Literal["poly", "train"] = "poly"
