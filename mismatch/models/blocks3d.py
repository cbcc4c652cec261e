"""3D building blocks: the volumetric twins of :mod:`mismatch.models.blocks`.

Same structure, names and submodules as the 2D blocks (``main`` and ``side`` branches, side
width ``max(1, c // 8)``), with ``Conv3d`` (``bias=False``), ``InstanceNorm3d(affine=True)``
and ReLU. 3D PASB's side branch is a dilated ``3x3x3`` conv (dilation 5, a ``9x9x9`` support);
3D NASB's side branch is two ``3x3x3`` conv blocks with identity skips. The attention
arithmetic is the 2D one (``sigmoid(side) * main + main`` and ``side * main + main``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from mismatch.models.blocks import BLOCK_KINDS, side_channels


class ConvNormAct3d(nn.Sequential):
    """One ``k x k x k`` conv (no bias) + ``InstanceNorm3d(affine=True)`` + ReLU.

    Padding ``dilation * (kernel_size // 2)``: stride 1 keeps the size, stride 2 halves it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
    ) -> None:
        padding = dilation * (kernel_size // 2)
        super().__init__(
            OrderedDict(
                conv=nn.Conv3d(
                    in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False
                ),
                norm=nn.InstanceNorm3d(out_channels, affine=True),
                act=nn.ReLU(inplace=True),
            )
        )


class DoubleConv3d(nn.Sequential):
    """``ConvNormAct3d(stride)`` then ``ConvNormAct3d(stride=1)`` (encoder stage, bridge, ``f``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            ConvNormAct3d(in_channels, out_channels, stride=stride),
            ConvNormAct3d(out_channels, out_channels),
        )


class PlainBlock3d(nn.Module):
    """Block of the plain decoders (ablations): one ``3x3x3`` conv+IN+ReLU; ``side`` is None."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.main = ConvNormAct3d(channels, channels)
        self.side: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class PASBSide3d(nn.Sequential):
    """3D PASB side branch up to its sigmoid: 1x1x1 ``c -> c/8``, dilated 3x3x3 + IN + ReLU,
    1x1x1 ``c/8 -> c``."""

    def __init__(self, channels: int, dilation: int = 5) -> None:
        reduced = side_channels(channels)
        super().__init__(
            OrderedDict(
                reduce=nn.Conv3d(channels, reduced, 1, bias=False),
                dilated=ConvNormAct3d(reduced, reduced, dilation=dilation),
                expand=nn.Conv3d(reduced, channels, 1, bias=False),
            )
        )


class NASBSide3d(nn.Module):
    """3D NASB side branch: ``a = 1x1x1(x)``, ``b = conv1(a) + a``, ``d = conv2(b) + b``,
    output ``1x1x1(d)``; the identity skips keep its effective receptive field small."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        reduced = side_channels(channels)
        self.reduce = nn.Conv3d(channels, reduced, 1, bias=False)
        self.conv1 = ConvNormAct3d(reduced, reduced)
        self.conv2 = ConvNormAct3d(reduced, reduced)
        self.expand = nn.Conv3d(reduced, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.reduce(x)
        b = self.conv1(a) + a
        d = self.conv2(b) + b
        return self.expand(d)


class PASB3d(nn.Module):
    """3D positive attention shifting block: ``sigmoid(side(x)) * main(x) + main(x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.main = DoubleConv3d(channels, channels)
        self.side = PASBSide3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.main(x)
        return torch.sigmoid(self.side(x)) * main + main


class NASB3d(nn.Module):
    """3D negative attention shifting block: ``att * main(x) + main(x)``, ``att`` the raw side
    output (``sigmoid`` of it with ``negative_sigmoid=True``), as the 2D :class:`NASB`."""

    def __init__(self, channels: int, negative_sigmoid: bool = False) -> None:
        super().__init__()
        self.main = DoubleConv3d(channels, channels)
        self.side = NASBSide3d(channels)
        self.negative_sigmoid = negative_sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.main(x)
        attention = self.side(x)
        if self.negative_sigmoid:
            attention = torch.sigmoid(attention)
        return attention * main + main

    def extra_repr(self) -> str:
        return f"negative_sigmoid={self.negative_sigmoid}"


def make_block3d(kind: str, channels: int, negative_sigmoid: bool = False) -> nn.Module:
    """Build a 3D decoder block by kind: ``"plain"``, ``"pasb"`` or ``"nasb"``."""
    if kind == "plain":
        return PlainBlock3d(channels)
    if kind == "pasb":
        return PASB3d(channels)
    if kind == "nasb":
        return NASB3d(channels, negative_sigmoid=negative_sigmoid)
    raise ValueError(f"unknown block kind {kind!r}; expected one of {list(BLOCK_KINDS)}")
