"""Bidirectional Copy-Paste, BCP (Bai et al. 2023), on the U-Net backbone.

A student and an EMA teacher (as :mod:`mismatch.methods.mean_teacher`). Training has two
stages, counted in optimiser steps by :meth:`BCP.after_step` (the count is a buffer of the
state dict, so it survives a checkpoint resume):

1. the first steps (``pretrain_fraction`` of the run, or ``pretrain_steps``) of labelled-only copy-paste: a crop of one labelled slice is
   pasted into another, and the mixed image is supervised by the equally mixed ground truth.
2. Then the teacher restarts as a copy of the student (BCP loads the pre-trained weights into
   both) and follows it by EMA; every step mixes each labelled slice with an unlabelled one
   in both directions with ONE zero-centred mask (:func:`mismatch.methods.mixing.copy_paste_mask`):
   a labelled crop pasted into the unlabelled slice, and an unlabelled crop into the labelled
   slice. Labelled pixels are supervised by the ground truth (weight 1), unlabelled pixels by
   the teacher's hard pseudo-label ``p >= 0.5`` (weight ``alpha`` = 0.5).

The loss of a mixed image is BCP's ``mix_loss``: Dice and cross-entropy computed separately on
the outer region and on the pasted box, each times its weight, then ``(dice + ce) / 2``; here
the Dice is the project's soft Dice restricted to the region and the cross-entropy the binary one.
With C > 2 classes the pseudo-label is the teacher's argmax, the Dice the multi-class soft
Dice and the cross-entropy the categorical one; label maps are pasted as class indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mismatch.losses import hard_labels, probabilities
from mismatch.methods.base import Batch
from mismatch.methods.configs.bcp import BCPConfig
from mismatch.methods.mixing import copy_paste_mask, masked_bce, masked_dice_loss, paste
from mismatch.methods.teacher import TeacherStudent
from mismatch.optim import OptimizerSetup

if TYPE_CHECKING:
    from mismatch.config import TrainSpec


@dataclass
class Mix:
    """Mixed images and their supervision: ``outer`` targets where ``mask`` is 1 (weight
    ``outer_weight``), ``inner`` targets in the pasted box where it is 0 (``inner_weight``)."""

    image: torch.Tensor  # (B, C, H, W)
    outer: torch.Tensor  # (B, 1, H, W) class indices
    inner: torch.Tensor  # (B, 1, H, W) class indices
    mask: torch.Tensor  # (H, W): 1 outside the box, 0 in it
    outer_weight: float
    inner_weight: float

    def target(self) -> torch.Tensor:
        """The mixed label map (ground truth and pseudo-labels pasted with the image's mask)."""
        return paste(self.outer, self.inner, self.mask)

    def weight(self) -> torch.Tensor:
        """Each pixel's weight (B, 1, H, W) in the loss (for inspection; the loss is per region)."""
        outer, inner = torch.full_like(self.outer, self.outer_weight), torch.full_like(self.inner, self.inner_weight)
        return paste(outer, inner, self.mask)

    def terms(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BCP's ``mix_loss``: ``(dice, ce)``, each the weighted sum over the two regions."""
        prob = probabilities(logits)
        inside = 1 - self.mask
        dice = self.outer_weight * masked_dice_loss(prob, self.outer, self.mask)
        dice = dice + self.inner_weight * masked_dice_loss(prob, self.inner, inside)
        ce = self.outer_weight * masked_bce(logits, self.outer, self.mask)
        ce = ce + self.inner_weight * masked_bce(logits, self.inner, inside)
        return dice, ce

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """BCP's loss of one mixed batch, ``(dice + ce) / 2``."""
        dice, ce = self.terms(logits)
        return (dice + ce) / 2


def bidirectional_mixes(
    lab_image: torch.Tensor,
    lab_label: torch.Tensor,
    unl_image: torch.Tensor,
    pseudo: torch.Tensor,
    mask: torch.Tensor,
    alpha: float,
) -> tuple[Mix, Mix]:
    """BCP's two mixes of paired labelled and unlabelled slices under one mask.

    First: the unlabelled slice outside (pseudo-label, weight ``alpha``) with the labelled crop
    pasted in the box (ground truth, weight 1). Second: the labelled slice outside (ground
    truth, weight 1) with the unlabelled crop in the box (pseudo-label, weight ``alpha``).
    """
    into_unlabelled = Mix(paste(unl_image, lab_image, mask), pseudo, lab_label, mask, alpha, 1.0)
    into_labelled = Mix(paste(lab_image, unl_image, mask), lab_label, pseudo, mask, 1.0, alpha)
    return into_unlabelled, into_labelled


def within_mix(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: float) -> Mix:
    """Copy-paste within one kind of slice: slice ``i`` outside, slice ``i + B // 2`` (mod B)
    in the box, as BCP's halves ``a`` and ``b``; with one slice the partner is itself."""
    shift = image.shape[0] // 2
    partner, partner_target = image.roll(shift, 0), target.roll(shift, 0)
    return Mix(paste(image, partner, mask), target, partner_target, mask, weight, weight)


class BCP(TeacherStudent):
    """BCP: a U-Net student, its EMA teacher and a step counter that switches the stage."""

    config_class = BCPConfig
    config: BCPConfig

    def __init__(self, config: BCPConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._steps = 0  # host copy of ``steps_done``: reading it needs no device sync
        self.register_load_state_dict_post_hook(_read_step_count)
        self.pretrain_steps = config.pretrain_steps or 0  # configure_optimizers sets it from the run's length

    def configure_optimizers(self, train: TrainSpec, steps_per_epoch: int) -> list[OptimizerSetup]:
        """The default optimisers; also fixes the stage switch from the run's step count, so that
        under any budget pre-training is BCP's proportion of the steps (or ``pretrain_steps``)."""
        if self.config.pretrain_steps is None:
            self.pretrain_steps = round(self.config.pretrain_fraction * train.epochs * steps_per_epoch)
        return super().configure_optimizers(train, steps_per_epoch)

    @property
    def pretraining(self) -> bool:
        """True during the labelled-only copy-paste stage (the first ``pretrain_steps`` steps)."""
        return self._steps < self.pretrain_steps

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Copy-paste losses of this stage (see the module docstring)."""
        height, width = batch.image.shape[-2:]
        mask = copy_paste_mask(height, width, self.config.ratio, device=batch.image.device)
        mixes = self.mixes(batch, mask)
        if not mixes:  # pre-training step without a labelled slice: nothing to learn from
            return {"loss": 0.0 * self.student(batch.image)[0].sum()}
        logits = self.student(torch.cat([m.image for m in mixes]))[0]
        terms = [m.terms(lg) for m, lg in zip(mixes, logits.split([len(m.image) for m in mixes]))]
        # logged as BCP logs them (mix_dice, mix_ce), each already halved: loss = dice + bce
        losses = {"dice": sum(t[0] for t in terms) / 2, "bce": sum(t[1] for t in terms) / 2}
        losses["loss"] = losses["dice"] + losses["bce"]
        return losses

    def mixes(self, batch: Batch, mask: torch.Tensor) -> list[Mix]:
        """This step's mixed batches: the labelled copy-paste in pre-training (or when the
        batch has no unlabelled slice), else both directions of each labelled/unlabelled pair."""
        lab, unl = batch.lab, batch.unl
        if batch.n_labelled and (self.pretraining or not batch.n_unlabelled):
            return [within_mix(batch.image[lab], batch.label[lab], mask, 1.0)]
        if batch.n_labelled:
            n = min(batch.n_labelled, batch.n_unlabelled)
            lab_image, lab_label, unl_image = batch.image[lab][:n], batch.label[lab][:n], batch.image[unl][:n]
            pseudo = self.pseudo_labels(unl_image)
            return list(bidirectional_mixes(lab_image, lab_label, unl_image, pseudo, mask, self.config.alpha))
        if not self.pretraining:  # streaming protocol: a batch of unlabelled slices only
            unl_image = batch.image[unl]
            return [within_mix(unl_image, self.pseudo_labels(unl_image), mask, self.config.alpha)]
        return []

    @torch.no_grad()
    def pseudo_labels(self, image: torch.Tensor) -> torch.Tensor:
        """The teacher's hard pseudo-labels ``p >= 0.5`` (BCP's argmax; the argmax class for
        C > 2 classes), without gradient."""
        prob = probabilities(self.teacher(image)[0])
        if prob.shape[1] > 1:
            return hard_labels(prob).to(image.dtype)
        return (prob >= 0.5).to(image.dtype)

    @torch.no_grad()
    def after_step(self) -> None:
        """Count the step; at the stage switch copy the student into the teacher, after it EMA."""
        self._steps += 1
        self.steps_done.fill_(self._steps)
        if self._steps == self.pretrain_steps:
            self.teacher.load_state_dict(self.student.state_dict())
        elif self._steps > self.pretrain_steps:
            self.ema_update()


def _read_step_count(module: Any, incompatible_keys: Any) -> None:
    """After ``load_state_dict``: the host step count follows the loaded buffer."""
    module._steps = int(module.steps_done)
