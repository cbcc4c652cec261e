"""Building blocks of the MisMatch networks: conv blocks, the plain block, PASB and NASB.

Every convolution here has ``bias=False`` (the normalisation that follows makes a bias
redundant); normalisation is ``InstanceNorm2d(affine=True)`` and the activation ReLU, as in
the authors' 2D code. The three decoder blocks (plain, PASB, NASB) keep the spatial size and
the channel count, and expose their branches as ``main`` and ``side`` submodules so that the
effective-receptive-field code (:mod:`mismatch.models.erf`) measures the real blocks.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

BLOCK_KINDS: tuple[str, ...] = ("plain", "pasb", "nasb")

#: Convolution and instance norm by spatial dims: every block takes ``dims`` (2, or 3 for the
#: volumetric twins of :mod:`mismatch.models.blocks3d`), so both share one definition.
CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
NORM: dict[int, type[nn.Module]] = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


class ConvNormAct(nn.Sequential):
    """One ``k x k`` conv (no bias) + ``InstanceNorm2d(affine=True)`` + ReLU.

    Padding is ``dilation * (kernel_size // 2)`` so that a stride-1 block keeps the spatial
    size and a stride-2 block halves it (for even sizes).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        dims: int = 2,
    ) -> None:
        padding = dilation * (kernel_size // 2)
        super().__init__(
            OrderedDict(
                conv=CONV[dims](
                    in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False
                ),
                norm=NORM[dims](out_channels, affine=True),
                act=nn.ReLU(inplace=True),
            )
        )


class DoubleConv(nn.Sequential):
    """The "double conv": ``ConvNormAct(stride)`` then ``ConvNormAct(stride=1)``.

    With ``stride=2`` it is the encoder's downsampling stage (no max-pooling anywhere); with
    ``stride=1`` it is the bridge, the U-Net decoder stage, and the main branch ``f`` of PASB
    and NASB (two 3x3 conv+IN+ReLU).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dims: int = 2) -> None:
        super().__init__(
            ConvNormAct(in_channels, out_channels, stride=stride, dims=dims),
            ConvNormAct(out_channels, out_channels, dims=dims),
        )


def side_channels(channels: int) -> int:
    """Width of the PASB/NASB side branches: ``channels // 8`` (at least 1 for tiny nets)."""
    return max(1, channels // 8)


class PlainBlock(nn.Module):
    """The block of the "plain" decoders of the ablations MM-a/b/c: one 3x3 conv+IN+ReLU.

    ``side`` is ``None``; ``main`` is the single conv block.
    """

    def __init__(self, channels: int, dims: int = 2) -> None:
        super().__init__()
        self.main = ConvNormAct(channels, channels, dims=dims)
        self.side: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class PASBSide(nn.Sequential):
    """Side branch of PASB, up to (not including) its sigmoid.

    1x1 conv ``c -> c/8``, 3x3 conv ``c/8 -> c/8`` with dilation 5 (a 9x9 support, the
    paper's K' = 9) + IN + ReLU, 1x1 conv ``c/8 -> c``. Its output is the attention logit.
    """

    def __init__(self, channels: int, dilation: int = 5, dims: int = 2) -> None:
        reduced = side_channels(channels)
        super().__init__(
            OrderedDict(
                reduce=CONV[dims](channels, reduced, 1, bias=False),
                dilated=ConvNormAct(reduced, reduced, dilation=dilation, dims=dims),
                expand=CONV[dims](reduced, channels, 1, bias=False),
            )
        )


class NASBSide(nn.Module):
    """Side branch of NASB: the main branch's two 3x3 conv blocks with identity skips.

    ``a = 1x1(x)`` (``c -> c/8``), ``b = conv1(a) + a``, ``d = conv2(b) + b``, output
    ``1x1(d)`` (``c/8 -> c``). The skips restrict the growth of the effective receptive field.
    """

    def __init__(self, channels: int, dims: int = 2) -> None:
        super().__init__()
        reduced = side_channels(channels)
        self.reduce = CONV[dims](channels, reduced, 1, bias=False)
        self.conv1 = ConvNormAct(reduced, reduced, dims=dims)
        self.conv2 = ConvNormAct(reduced, reduced, dims=dims)
        self.expand = CONV[dims](reduced, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.reduce(x)
        b = self.conv1(a) + a
        d = self.conv2(b) + b
        return self.expand(d)


class PASB(nn.Module):
    """Positive attention shifting block: ``out = sigmoid(side(x)) * main(x) + main(x)``.

    ``main`` is the paper's ``f`` (two 3x3 conv+IN+ReLU); ``side`` (:class:`PASBSide`) has a
    dilated conv whose larger effective receptive field raises the confidence of ``f``.
    """

    def __init__(self, channels: int, dims: int = 2) -> None:
        super().__init__()
        self.main = DoubleConv(channels, channels, dims=dims)
        self.side = PASBSide(channels, dims=dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.main(x)
        return torch.sigmoid(self.side(x)) * main + main


class NASB(nn.Module):
    """Negative attention shifting block: ``out = att * main(x) + main(x)``.

    ``main`` is the paper's ``f``; ``side`` (:class:`NASBSide`) has skip connections, so a
    smaller effective receptive field. As in the authors' 2D code the attention ``att`` is the
    raw side output (no sigmoid) by default; ``negative_sigmoid=True`` applies a sigmoid, the
    [0, 1] mask the paper's text suggests.
    """

    def __init__(self, channels: int, negative_sigmoid: bool = False, dims: int = 2) -> None:
        super().__init__()
        self.main = DoubleConv(channels, channels, dims=dims)
        self.side = NASBSide(channels, dims=dims)
        self.negative_sigmoid = negative_sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.main(x)
        attention = self.side(x)
        if self.negative_sigmoid:
            attention = torch.sigmoid(attention)
        return attention * main + main

    def extra_repr(self) -> str:
        return f"negative_sigmoid={self.negative_sigmoid}"


def make_block(kind: str, channels: int, negative_sigmoid: bool = False, dims: int = 2) -> nn.Module:
    """Build a decoder block by kind: ``"plain"``, ``"pasb"`` or ``"nasb"``.

    ``negative_sigmoid`` only affects ``"nasb"``. Raises ``ValueError`` on an unknown kind.
    """
    if kind == "plain":
        return PlainBlock(channels, dims)
    if kind == "pasb":
        return PASB(channels, dims)
    if kind == "nasb":
        return NASB(channels, negative_sigmoid=negative_sigmoid, dims=dims)
    raise ValueError(f"unknown block kind {kind!r}; expected one of {list(BLOCK_KINDS)}")
