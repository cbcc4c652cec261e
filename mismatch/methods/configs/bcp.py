"""Settings of Bidirectional Copy-Paste, BCP (implementation: :mod:`mismatch.methods.bcp`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from mismatch.config import MethodConfig
from mismatch.methods.configs import register_config
from mismatch.search_space import Dimension, Uniform


@register_config("bcp")
class BCPConfig(MethodConfig):
    """Settings of BCP: a labelled-only copy-paste stage, then bidirectional copy-paste.

    ``alpha`` is BCP's weight of the unlabelled (pseudo-labelled) parts of a mixed image
    (``--u_weight 0.5``); the labelled parts weigh 1. Optimiser steps of labelled-only
    copy-paste come first: ``pretrain_fraction`` of the trial's steps (BCP's proportion,
    10,000 ``pre_iterations`` of 40,000 in all), or exactly ``pretrain_steps`` when set
    (BCP's absolute count is ``pretrain_steps: 10000``); then the teacher restarts as a copy of the
    student and follows it by EMA (``ema_decay``). ``ratio`` is the side of the pasted box
    as a fraction of the image side (2/3). BCP tests with the student (``predict_with``).
    """

    implementation: ClassVar[str] = "mismatch.methods.bcp:BCP"
    spatial_dims: ClassVar[tuple[int, ...]] = (2,)
    """2D only: the copy-paste mask is one (H, W) box per step, written for slices."""
    reference: ClassVar[str] = "Bai et al. 2023, Bidirectional copy-paste for semi-supervised medical image segmentation (CVPR)"
    summary: ClassVar[str] = "Dice + BCE on copy-paste mixes of labelled and unlabelled slices (teacher pseudo-labels)"
    search_space: ClassVar[dict[str, Dimension]] = {
        "alpha": Uniform(0.1, 1.0, source="Bai et al. 2023: alpha = 0.5 (code --u_weight); up to the labelled parts' weight 1"),
        "ema_decay": Uniform(0.99, 0.999, source="Bai et al. 2023 code: 0.99; Tarvainen and Valpola 2017: up to 0.999"),
        "pretrain_fraction": Uniform(0.0, 0.5, source="Bai et al. 2023 code: 10,000 pre-training of 40,000 iterations (0.25)"),
    }

    name: Literal["bcp"] = "bcp"
    width: int = Field(24, ge=1)
    alpha: float = Field(0.5, ge=0)
    pretrain_fraction: float = Field(0.25, ge=0, le=1)
    pretrain_steps: int | None = Field(None, ge=0)
    ema_decay: float = Field(0.99, ge=0, le=1)
    ratio: float = Field(2 / 3, gt=0, lt=1)
    predict_with: Literal["student", "teacher"] = "student"
