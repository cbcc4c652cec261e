"""Loss functions and output conventions shared by the training methods.

Output convention (docs/methods.md, "Multi-class and 3D"): a binary task (C = 2 classes)
has ONE output channel, the foreground logit, read through a sigmoid (today's path, so binary
results are unchanged); a task with C > 2 classes has C channels read through a softmax over
dim 1. Labels are ``(B, 1, *spatial)`` float class indices (binary: 0/1). Every helper here
works on 2D ``(B, ., H, W)`` and 3D ``(B, ., D, H, W)`` tensors alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    (and so the meaning of their alpha). Class probabilities (B, C, ...) are compared
    elementwise, so the mean runs over classes too.
    """
    return torch.mean((p1 - p2) ** 2) + torch.mean((p2 - p1) ** 2)


def out_channels_for(num_classes: int) -> int:
    """Output channels of a network for ``num_classes`` classes: 1 for a binary task, else C."""
    if num_classes < 2:
        raise ValueError(f"a segmentation task has at least 2 classes, got {num_classes}")
    return 1 if num_classes == 2 else num_classes


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``sigmoid`` of a one-channel logit (binary), else ``softmax`` over the class dim 1."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def one_hot(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class-index labels ``(B, 1, *spatial)`` as a one-hot float map ``(B, C, *spatial)``."""
    index = label[:, 0].long()
    return F.one_hot(index, num_classes).movedim(-1, 1).to(label.dtype)


def dice_loss(prob: torch.Tensor, label: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss of probabilities against class-index labels ``(B, 1, *spatial)``.

    Binary (``prob`` has one channel): :func:`soft_dice_loss`, unchanged. C channels: the soft
    Dice of each class against the one-hot label, per image, averaged over images and over
    ALL C classes (background included, as SSL4MIS's ``DiceLoss``).
    """
    if prob.shape[1] == 1:
        return soft_dice_loss(prob, label, smooth)
    target = one_hot(label, prob.shape[1])
    dims = tuple(range(2, prob.ndim))
    inter = (prob * target).sum(dims)  # (B, C)
    denom = prob.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def hard_labels(prob: torch.Tensor) -> torch.Tensor:
    """Hard labels ``(B, 1, *spatial)`` in ``prob``'s dtype: ``prob > 0.5`` for one channel,
    else the argmax over classes (the label map, as :class:`~mismatch.methods.Batch` labels)."""
    if prob.shape[1] == 1:
        return (prob > 0.5).to(prob.dtype)
    return prob.argmax(dim=1, keepdim=True).to(prob.dtype)


def confidence(prob: torch.Tensor) -> torch.Tensor:
    """Confidence ``(B, 1, *spatial)`` of the hard label: ``max(p, 1 - p)`` for one channel,
    else the largest class probability."""
    if prob.shape[1] == 1:
        return torch.maximum(prob, 1 - prob)
    return prob.amax(dim=1, keepdim=True)


def cross_entropy(logits: torch.Tensor, label: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits against class-index labels ``(B, 1, *spatial)``.

    One channel: binary cross-entropy with logits (today's path). C channels: the categorical
    cross-entropy. With ``reduction="none"`` both give a ``(B, 1, *spatial)`` map, so a
    pixel mask applies alike.
    """
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits, label, reduction=reduction)
    ce = F.cross_entropy(logits, label[:, 0].long(), reduction=reduction)
    return ce.unsqueeze(1) if reduction == "none" else ce


def entropy(prob: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-pixel predictive entropy (nats) ``(B, 1, *spatial)``: of ``(p, 1 - p)`` for one
    channel (at most ln 2), else of the class distribution (at most ln C); ``eps`` inside
    the logarithm, as the UA-MT authors' code."""
    if prob.shape[1] == 1:
        return -(prob * torch.log(prob + eps) + (1 - prob) * torch.log(1 - prob + eps))
    return -(prob * torch.log(prob + eps)).sum(dim=1, keepdim=True)
