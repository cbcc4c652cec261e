"""3D networks: a 3D U-Net and the two-decoder 3D MisMatch networks, with their factories.

The 2D layout of :mod:`mismatch.models.networks` lifted to volumes ``(B, C, D, H, W)`` with
one more resolution level, as in V-Net (the backbone of the authors' later 3D MisMatch code
and of the LA benchmark): the encoder downsamples four times (stride-2 convs, no pooling), so
D, H and W must be multiples of 16 (the LA patch 80 x 112 x 112 is). Features at width ``w``:
``w, 2w, 4w, 8w, 16w`` and a ``16w`` bridge at 1/16 of the size. Decoders run five stages,
deep to shallow, with the 2D stage rules (attention decoder: ``cat`` -> trilinear x2 up ->
smooth conv -> block; U-Net decoder: up -> ``cat`` -> double conv); stage widths
``8w, 4w, 2w, w, w``. Default width 16 (V-Net's first level; see ``docs/models.md``).

Output convention (issue 15 contract): ``out_channels=1`` is one foreground logit (sigmoid);
``out_channels=C > 1`` is C class logits (softmax over dim 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mismatch.models.blocks3d import ConvNormAct3d, DoubleConv3d
from mismatch.models.decoders import AttentionDecoder, UNetDecoder
from mismatch.models.networks import EncoderDecoderNet

#: Stride-2 stages of the 3D encoder: D, H and W must be multiples of ``2 ** LEVELS_3D``.
LEVELS_3D = 4
SIZE_DIVISOR_3D = 2**LEVELS_3D
#: Default first-level width of the 3D networks (V-Net's 16).
DEFAULT_WIDTH_3D = 16


def check_input_3d(x: torch.Tensor, in_channels: int) -> None:
    """Raise a one-line ``ValueError`` unless ``x`` is ``(B, in_channels, D, H, W)`` with D, H
    and W divisible by 16."""
    if x.ndim != 5:
        raise ValueError(f"expected an input of shape (B, C, D, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channels, got input of shape {tuple(x.shape)}")
    if any(n % SIZE_DIVISOR_3D for n in x.shape[2:]):
        raise ValueError(
            f"3D patch size must be divisible by {SIZE_DIVISOR_3D} in D, H and W ({LEVELS_3D} "
            f"stride-2 stages), got input of shape {tuple(x.shape)}"
        )


class Encoder3d(nn.Module):
    """3D encoder: ``econv0`` (``in -> w``), four stride-2 double convs (``2w, 4w, 8w, 16w``)
    and a stride-1 bridge (``16w -> 16w``); returns ``[x0, x1, x2, x3, x4, bridge]``."""

    def __init__(self, in_channels: int = 1, width: int = DEFAULT_WIDTH_3D) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.width = width
        channels = self.feature_channels
        self.econv0 = ConvNormAct3d(in_channels, width)
        self.downs = nn.ModuleList(
            DoubleConv3d(channels[i], channels[i + 1], stride=2) for i in range(LEVELS_3D)
        )
        self.bridge = DoubleConv3d(channels[-1], channels[-1])

    @property
    def feature_channels(self) -> list[int]:
        """Channel counts of the returned features, shallow to deep (bridge last)."""
        levels = [self.width * 2**i for i in range(LEVELS_3D + 1)]
        return [*levels, levels[-1]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input_3d(x, self.in_channels)
        features = [self.econv0(x)]
        for down in self.downs:
            features.append(down(features[-1]))
        return [*features, self.bridge(features[-1])]


class AttentionDecoder3d(AttentionDecoder):
    """MisMatch's decoder in 3D with a block kind (``"plain"``, ``"pasb"``, ``"nasb"``): the 2D
    :class:`~mismatch.models.decoders.AttentionDecoder` with ``dims=3`` and one more level.

    Stage ``i``: ``cat(y, skip)``, trilinear x2 upsample (not in the last stage), a smooth
    3x3x3 conv+IN+ReLU to the stage width, the block; a 1x1x1 conv (bias) gives the logits.
    """

    def __init__(
        self, width: int = DEFAULT_WIDTH_3D, block: str = "plain", negative_sigmoid: bool = False,
        out_channels: int = 1,
    ) -> None:
        super().__init__(width, block, negative_sigmoid, out_channels, dims=3, levels=LEVELS_3D)


class UNetDecoder3d(UNetDecoder):
    """3D U-Net decoder: stage 0 ``DoubleConv(cat(bridge, x4))`` at 1/16, then
    ``DoubleConv(cat(up(y), skip))``; a 1x1x1 conv (bias) gives the logits (the 2D
    :class:`~mismatch.models.decoders.UNetDecoder` with ``dims=3`` and one more level)."""

    def __init__(self, width: int = DEFAULT_WIDTH_3D, out_channels: int = 1) -> None:
        super().__init__(width, out_channels, dims=3, levels=LEVELS_3D)


class EncoderDecoderNet3d(EncoderDecoderNet):
    """:class:`EncoderDecoderNet` on volumes: ``forward(x)`` returns per-decoder logits
    ``(B, out_channels, D, H, W)``; ``probabilities(x)`` their mean sigmoid (one channel) or
    mean softmax over classes (``out_channels > 1``)."""

    def __init__(self, encoder: Encoder3d, decoders: Sequence[nn.Module], out_channels: int = 1) -> None:
        super().__init__(encoder, decoders)  # type: ignore[arg-type]
        self.out_channels = out_channels

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over decoders of the foreground (sigmoid) or class (softmax) probabilities."""
        logits = torch.stack(self(x))  # (n_decoders, B, out_channels, D, H, W)
        probs = torch.sigmoid(logits) if self.out_channels == 1 else torch.softmax(logits, dim=2)
        return probs.mean(dim=0)


def _check_out_channels(out_channels: int) -> None:
    if out_channels < 1:
        raise ValueError(f"out_channels must be 1 (binary, sigmoid) or the number of classes, got {out_channels}")


def unet3d(in_channels: int = 1, width: int = DEFAULT_WIDTH_3D, out_channels: int = 1) -> EncoderDecoderNet3d:
    """3D U-Net: :class:`Encoder3d` + :class:`UNetDecoder3d` (10,026,849 parameters at width 16)."""
    _check_out_channels(out_channels)
    decoder = UNetDecoder3d(width, out_channels)
    return EncoderDecoderNet3d(Encoder3d(in_channels, width), [decoder], out_channels)


def two_decoder_3d(
    in_channels: int, width: int, block1: str, block2: str, negative_sigmoid: bool = False,
    out_channels: int = 1,
) -> EncoderDecoderNet3d:
    """A 3D encoder with two :class:`AttentionDecoder3d` of the given block kinds."""
    _check_out_channels(out_channels)
    decoders = [
        AttentionDecoder3d(width, block, negative_sigmoid=negative_sigmoid, out_channels=out_channels)
        for block in (block1, block2)
    ]
    return EncoderDecoderNet3d(Encoder3d(in_channels, width), decoders, out_channels)


def mm3d(
    in_channels: int = 1, width: int = DEFAULT_WIDTH_3D, out_channels: int = 1, negative_sigmoid: bool = False
) -> EncoderDecoderNet3d:
    """3D MisMatch: 3D PASB decoder + 3D NASB decoder."""
    return two_decoder_3d(in_channels, width, "pasb", "nasb", negative_sigmoid, out_channels)


def mm3d_a(in_channels: int = 1, width: int = DEFAULT_WIDTH_3D, out_channels: int = 1) -> EncoderDecoderNet3d:
    """3D ablation MM-a: plain + plain decoders."""
    return two_decoder_3d(in_channels, width, "plain", "plain", False, out_channels)


def mm3d_b(
    in_channels: int = 1, width: int = DEFAULT_WIDTH_3D, out_channels: int = 1, negative_sigmoid: bool = False
) -> EncoderDecoderNet3d:
    """3D ablation MM-b: plain + NASB decoders."""
    return two_decoder_3d(in_channels, width, "plain", "nasb", negative_sigmoid, out_channels)


def mm3d_c(in_channels: int = 1, width: int = DEFAULT_WIDTH_3D, out_channels: int = 1) -> EncoderDecoderNet3d:
    """3D ablation MM-c: plain + PASB decoders."""
    return two_decoder_3d(in_channels, width, "plain", "pasb", False, out_channels)
