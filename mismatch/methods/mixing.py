"""Mixing of slices shared by the copy-paste methods: masks, pasting and region-restricted losses.

Two mask conventions, each named after the paper that uses it:

- :func:`copy_paste_mask` (BCP, Bai et al. 2023): ONE (H, W) mask per step, 1 everywhere except a
  zero-valued box of ``ratio`` times each image side (2/3 in BCP) at a uniformly drawn
  position; ``paste(outer, inner, mask)`` keeps ``outer`` where the mask is 1 and takes
  ``inner`` in the box.
- :func:`cutmix_boxes` (UniMatch, Yang et al. 2023): a (B, 1, H, W) mask per slice, 1 INSIDE
  a box of random area and aspect ratio (drawn with probability ``p``; else all zeros).

Randomness comes from torch's global RNG only, so runs stay deterministic on the CPU.
"""

from __future__ import annotations

import math

import torch

from mismatch.losses import cross_entropy, one_hot

#: BCP's box side, as a fraction of the image side (``generate_mask``: ``int(img_x * 2 / 3)``).
BCP_RATIO = 2.0 / 3.0


def _randint(low: int, high: int) -> int:
    """A uniform integer in ``[low, high)`` (``low`` when the range is empty)."""
    return low if high <= low else int(torch.randint(low, high, ()))


def copy_paste_mask(
    height: int, width: int, ratio: float = BCP_RATIO, device: torch.device | None = None
) -> torch.Tensor:
    """BCP's mask: (H, W) float, 0 in a box of ``int(ratio * side)`` pixels per side, 1 elsewhere.

    The box's top-left corner is uniform in ``[0, side - box)`` as BCP's
    ``np.random.randint(0, img_x - patch_x)`` (a box filling the side starts at 0).
    """
    box_h, box_w = int(height * ratio), int(width * ratio)
    top, left = _randint(0, height - box_h), _randint(0, width - box_w)
    mask = torch.ones(height, width, device=device)
    mask[top : top + box_h, left : left + box_w] = 0
    return mask


def paste(outer: torch.Tensor, inner: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``outer * mask + inner * (1 - mask)``: ``inner`` pasted where ``mask`` is 0.

    ``mask`` broadcasts against ``outer`` and ``inner``: (H, W) for one mask per step, or
    (B, 1, H, W) for one per slice. Used alike for images, labels and pseudo-labels.
    """
    return outer * mask + inner * (1 - mask)


def cutmix_box(
    height: int,
    width: int,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> torch.Tensor:
    """UniMatch's ``obtain_cutmix_box``: (H, W) float, 1 inside one box, with probability ``p``.

    The box's area is ``U(area) * H * W`` and its aspect ratio ``U(aspect)``; ratio and
    position are redrawn until the box fits (as UniMatch); with probability ``1 - p`` the
    mask is all zeros (no CutMix for this slice).
    """
    mask = torch.zeros(height, width)
    if float(torch.rand(())) >= p:
        return mask
    size = (area[0] + (area[1] - area[0]) * float(torch.rand(()))) * height * width
    while True:
        ratio = aspect[0] + (aspect[1] - aspect[0]) * float(torch.rand(()))
        box_w, box_h = int(math.sqrt(size / ratio)), int(math.sqrt(size * ratio))
        left, top = _randint(0, width), _randint(0, height)
        if left + box_w <= width and top + box_h <= height:
            break
    mask[top : top + box_h, left : left + box_w] = 1
    return mask


def cutmix_boxes(batch: int, height: int, width: int, p: float = 0.5, device: torch.device | None = None) -> torch.Tensor:
    """One :func:`cutmix_box` per slice, drawn independently: (B, 1, H, W) float."""
    return torch.stack([cutmix_box(height, width, p) for _ in range(batch)]).unsqueeze(1).to(device)


def masked_dice_loss(prob: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """The project's soft Dice (:func:`mismatch.losses.dice_loss`) over the pixels where
    ``mask`` is 1 only, per image, averaged over the batch; an image with an empty mask
    contributes 0. All three tensors are (B, 1, H, W) (``mask`` may broadcast). With C class
    channels in ``prob`` the target holds class indices: the Dice is taken per class against
    its one-hot map and averaged over the classes too."""
    if prob.shape[1] > 1:
        target = one_hot(target, prob.shape[1])
    mask = mask.expand_as(prob)
    dims = tuple(range(1, prob.ndim)) if prob.shape[1] == 1 else tuple(range(2, prob.ndim))
    inter = (prob * target * mask).sum(dims)
    denom = (prob * mask).sum(dims) + (target * mask).sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the pixels where ``mask`` is 1 (BCP's
    ``(CE * mask).sum() / (mask.sum() + 1e-16)``); 0 for an empty mask. Binary for one logit
    channel; categorical against class indices ``(B, 1, H, W)`` for C channels."""
    ce = cross_entropy(logits, target, reduction="none")  # (B, 1, H, W)
    mask = mask.expand_as(ce)
    return (ce * mask).sum() / (mask.sum() + 1e-16)
