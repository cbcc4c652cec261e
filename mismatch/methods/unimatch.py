"""UniMatch (Yang et al. 2023), medical variant, on the U-Net backbone.

One U-Net. On unlabelled slices the weak view (the slice itself) gives, without gradient,
pseudo-labels ``p >= 0.5`` kept where ``max(p, 1 - p) >= threshold``. Three streams learn
from them, each by the soft Dice over the confident pixels (UniMatch's Dice with ``ignore``):

- two strong views, each with its own brightness/contrast jitter and blur
  (:func:`mismatch.methods.augment.colour_jitter`, :func:`~mismatch.methods.augment.gaussian_blur`)
  and its own CutMix box (:func:`mismatch.methods.mixing.cutmix_boxes`) into which a strong view
  of ANOTHER unlabelled slice of the batch is pasted: the batch rolled by one (with one
  unlabelled slice per step, a separately augmented copy of the slice itself); the box's
  targets are that slice's pseudo-labels and confidences;
- the feature-perturbed stream: the decoder reads ``Dropout2d(fp_dropout)`` of every encoder
  feature of the weak view (UniMatch's ``need_fp``), and no other stream sees the dropout.

Loss ``(sup + alpha * (0.25 s1 + 0.25 s2 + 0.5 fp)) / 2`` with ``sup = (BCE + Dice) / 2`` on the
labelled slices (UniMatch's ``(CE + Dice) / 2``). With ``schedule: poly`` the learning rate
follows UniMatch's ``lr (1 - t / T) ** 0.9`` per optimiser step. With C > 2 classes (ACDC,
UniMatch's own medical setting) pseudo-labels are the argmax with the largest class
probability as the confidence, and the losses are the categorical CE and multi-class Dice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mismatch.config import ScheduleSpec, TrainSpec
from mismatch.losses import cross_entropy, dice_loss, probabilities
from mismatch.methods.augment import colour_jitter, gaussian_blur
from mismatch.methods.base import Batch, Method
from mismatch.methods.configs.unimatch import UniMatchConfig
from mismatch.methods.fixmatch import pseudo_labels
from mismatch.methods.mixing import cutmix_boxes, masked_dice_loss, paste
from mismatch.optim import OptimizerSetup, build_optimizer, build_scheduler

#: UniMatch's schedule: ``lr (1 - t / T) ** 0.9`` over every optimiser step.
POLY = ScheduleSpec(name="poly", power=0.9)


class UniMatch(Method):
    """UniMatch: weak-to-strong consistency on two CutMix strong views and perturbed features."""

    config_class = UniMatchConfig
    config: UniMatchConfig

    def __init__(self, config: UniMatchConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        self.net = self.build_net("unet")

    def strong_view(self, image: torch.Tensor) -> torch.Tensor:
        """Photometric strong view: jitter (probability ``jitter_p``), then blur (``blur_p``)."""
        cfg = self.config
        return gaussian_blur(colour_jitter(image, cfg.jitter, cfg.jitter_p), cfg.blur_p)

    def strong_views(
        self, image: torch.Tensor, mix_image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Two strong views of ``image``, each with ``mix_image``'s own strong view pasted in
        its own CutMix box: ``(view1, view2, box1, box2)``, boxes (B, 1, H, W), 1 = pasted."""
        b, _, h, w = image.shape
        views, boxes = [], []
        for _ in range(2):
            box = cutmix_boxes(b, h, w, self.config.cutmix_p, device=image.device)
            views.append(paste(self.strong_view(image), self.strong_view(mix_image), 1 - box))
            boxes.append(box)
        return views[0], views[1], boxes[0], boxes[1]

    def perturbed_logits(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The decoder on ``Dropout2d(fp_dropout)`` of every encoder feature (always on)."""
        dropped = [F.dropout2d(z, p=self.config.fp_dropout, training=True) for z in features]
        return self.net.decoders[0](dropped)

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Supervised (BCE + Dice) / 2; masked Dice of the strong and perturbed streams."""
        cfg = self.config
        features = self.net.encoder(batch.image)  # weak view of every slice, as UniMatch's joint pass
        logits = self.net.decoders[0](features)
        losses: dict[str, torch.Tensor] = {}
        lab, unl = batch.lab, batch.unl
        if batch.n_labelled:
            x, y = logits[lab], batch.label[lab]
            # UniMatch's (CE + Dice) / 2, halved again by its total: each term weighs 1/4
            losses["dice"] = dice_loss(probabilities(x), y) / 4
            losses["bce"] = cross_entropy(x, y) / 4
        if batch.n_unlabelled:
            image = batch.image[unl]
            label, conf = pseudo_labels(probabilities(logits[unl]).detach(), cfg.threshold)
            s1, s2, box1, box2 = self.strong_views(image, image.roll(1, 0))
            strong = probabilities(self.net(torch.cat([s1, s2]))[0]).chunk(2)
            fp = probabilities(self.perturbed_logits([z[unl] for z in features]))
            w = cfg.alpha / 2
            for name, prob, box in (("strong1", strong[0], box1), ("strong2", strong[1], box2)):
                target, mask = paste(label, label.roll(1, 0), 1 - box), paste(conf, conf.roll(1, 0), 1 - box)
                losses[name] = w * cfg.weight_strong * masked_dice_loss(prob, target, mask)
            losses["feature_perturbation"] = w * cfg.weight_fp * masked_dice_loss(fp, label, conf)
        losses["loss"] = sum(losses.values())
        return losses

    def configure_optimizers(self, train: TrainSpec, steps_per_epoch: int) -> list[OptimizerSetup]:
        """One ``train.optimizer``; UniMatch's poly schedule unless ``schedule: train``."""
        if self.config.schedule == "train":
            return super().configure_optimizers(train, steps_per_epoch)
        optimizer = build_optimizer(self.param_groups(train), train)
        return [OptimizerSetup(optimizer, build_scheduler(optimizer, POLY, train.epochs, steps_per_epoch))]
