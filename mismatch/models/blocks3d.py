"""3D building blocks: the volumetric twins of :mod:`mismatch.models.blocks`.

The 2D blocks with ``dims=3``: same structure, names and submodules (``main`` and ``side``
branches, side width ``max(1, c // 8)``), with ``Conv3d`` (``bias=False``),
``InstanceNorm3d(affine=True)`` and ReLU. 3D PASB's side branch is a dilated ``3x3x3`` conv
(dilation 5, a ``9x9x9`` support); 3D NASB's side branch is two ``3x3x3`` conv blocks with
identity skips. The attention arithmetic is the 2D one (``sigmoid(side) * main + main`` and
``side * main + main``). The names below exist so that 3D code and its tests read as such.
"""

from __future__ import annotations

from mismatch.models.blocks import NASB, PASB, ConvNormAct, DoubleConv, PlainBlock


class ConvNormAct3d(ConvNormAct):
    """:class:`~mismatch.models.blocks.ConvNormAct` in 3D: ``k x k x k`` conv + IN3d + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, dims=3)


class DoubleConv3d(DoubleConv):
    """``ConvNormAct3d(stride)`` then ``ConvNormAct3d(stride=1)`` (encoder stage, bridge, ``f``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride, dims=3)


class PlainBlock3d(PlainBlock):
    """Block of the plain 3D decoders (ablations): one ``3x3x3`` conv+IN+ReLU; ``side`` is None."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, dims=3)


class PASB3d(PASB):
    """3D positive attention shifting block: ``sigmoid(side(x)) * main(x) + main(x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, dims=3)


class NASB3d(NASB):
    """3D negative attention shifting block: ``att * main(x) + main(x)`` (``att`` raw, or its
    sigmoid with ``negative_sigmoid=True``), as the 2D :class:`~mismatch.models.blocks.NASB`."""

    def __init__(self, channels: int, negative_sigmoid: bool = False) -> None:
        super().__init__(channels, negative_sigmoid, dims=3)
