"""The shared encoder of every network (U-Net and the two-decoder MisMatch networks)."""

from __future__ import annotations

import torch
from torch import nn

from mismatch.models.blocks import ConvNormAct, DoubleConv

#: The encoder downsamples three times (stride-2 convs), so H and W must be multiples of this.
SIZE_DIVISOR = 8


def check_input(x: torch.Tensor, in_channels: int) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, H, W)`` with H, W divisible by 8."""
    if x.ndim != 4:
        raise ValueError(f"expected an input of shape (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"expected {in_channels} input channels, got input of shape {tuple(x.shape)}"
        )
    height, width = x.shape[-2:]
    if height % SIZE_DIVISOR or width % SIZE_DIVISOR:
        raise ValueError(
            f"input height and width must be divisible by {SIZE_DIVISOR} (three stride-2 "
            f"stages), got input of shape {tuple(x.shape)} (H={height}, W={width})"
        )


class Encoder(nn.Module):
    """Four-resolution conv encoder with a bridge; returns ``[x0, x1, x2, x3, bridge]``.

    ``econv0`` is one 3x3 conv+IN+ReLU (``in_channels -> w``); ``econv1..3`` are double convs
    whose first conv has stride 2 (``w -> 2w -> 4w -> 8w``); the bridge is a stride-1 double
    conv ``8w -> 8w``. Features have shapes ``(B, w, H, W)``, ``(B, 2w, H/2, W/2)``,
    ``(B, 4w, H/4, W/4)``, ``(B, 8w, H/8, W/8)`` and ``(B, 8w, H/8, W/8)``. The list can be
    edited before it is handed to a decoder (e.g. CCT perturbs ``features[-1]``).
    """

    def __init__(self, in_channels: int = 1, width: int = 24) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.width = width
        self.econv0 = ConvNormAct(in_channels, width)
        self.econv1 = DoubleConv(width, 2 * width, stride=2)
        self.econv2 = DoubleConv(2 * width, 4 * width, stride=2)
        self.econv3 = DoubleConv(4 * width, 8 * width, stride=2)
        self.bridge = DoubleConv(8 * width, 8 * width)

    @property
    def feature_channels(self) -> list[int]:
        """Channel counts of the returned features, shallow to deep."""
        w = self.width
        return [w, 2 * w, 4 * w, 8 * w, 8 * w]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(x, self.in_channels)
        x0 = self.econv0(x)
        x1 = self.econv1(x0)
        x2 = self.econv2(x1)
        x3 = self.econv3(x2)
        return [x0, x1, x2, x3, self.bridge(x3)]
