"""Loss functions shared by the training methods."""

from __future__ import annotations

import torch


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss 1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s), averaged over the batch.

    ``prob`` and ``target`` are (B, 1, H, W); each image gets its own Dice so that a batch of
    several slices weighs them equally (with the paper's batch size 1 this is the same as the
    authors' whole-batch Dice).
    """
    dims = tuple(range(1, prob.ndim))
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def symmetric_mse(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """MSE(p1, p2) + MSE(p2, p1), neither side detached, as the authors' consistency term.

    The two terms are equal in value; keeping both reproduces the authors' scale of the loss
    (and so the meaning of their alpha).
    """
    return torch.mean((p1 - p2) ** 2) + torch.mean((p2 - p1) ** 2)
