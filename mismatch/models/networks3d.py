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

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mismatch.models.blocks3d import ConvNormAct3d, DoubleConv3d, make_block3d
from mismatch.models.networks import EncoderDecoderNet

#: Stride-2 stages of the 3D encoder: D, H and W must be multiples of ``2 ** LEVELS_3D``.
LEVELS_3D = 4
SIZE_DIVISOR_3D = 2**LEVELS_3D
#: Default first-level width of the 3D networks (V-Net's 16).
DEFAULT_WIDTH_3D = 16

FeatureTransform = Callable[[int, torch.Tensor], torch.Tensor]


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


def upsample2x_3d(x: torch.Tensor) -> torch.Tensor:
    """Trilinear x2 upsampling with ``align_corners=True`` (the 2D code's bilinear, in 3D)."""
    return F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=True)


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


def _stage_channels(width: int) -> tuple[list[int], list[int]]:
    """Per decoder stage, deep to shallow: ``cat(y, skip)`` channels and output channels."""
    skips = [width * 2**i for i in reversed(range(LEVELS_3D + 1))]  # [16w, 8w, 4w, 2w, w]
    return [2 * c for c in skips], [c // 2 for c in skips[:-1]] + [width]


class _StageDecoder3d(nn.Module):
    """Shared plumbing of the 3D decoders: ``stages``, the 1x1x1 ``head``, the stage hook."""

    stages: nn.ModuleList
    head: nn.Conv3d

    def _run_stage(self, index: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_stages(
        self, features: Sequence[torch.Tensor], feature_transform: FeatureTransform | None = None
    ) -> list[torch.Tensor]:
        """Run the five stages on ``[x0, ..., x4, bridge]``; return their (transformed) outputs."""
        if len(features) != LEVELS_3D + 2:
            raise ValueError(f"expected the 3D encoder's {LEVELS_3D + 2} features, got {len(features)}")
        y = features[-1]
        outputs = []
        for index, skip in enumerate(features[LEVELS_3D::-1]):  # x4 .. x0, deep to shallow
            y = self._run_stage(index, y, skip)
            if feature_transform is not None:
                y = feature_transform(index, y)
            outputs.append(y)
        return outputs

    def forward(
        self, features: Sequence[torch.Tensor], feature_transform: FeatureTransform | None = None
    ) -> torch.Tensor:
        """Decode the encoder's features to logits ``(B, out_channels, D, H, W)``."""
        return self.head(self.forward_stages(features, feature_transform)[-1])


class AttentionDecoder3d(_StageDecoder3d):
    """MisMatch's decoder in 3D with a block kind (``"plain"``, ``"pasb"``, ``"nasb"``).

    Stage ``i``: ``cat(y, skip)``, trilinear x2 upsample (not in the last stage), a smooth
    3x3x3 conv+IN+ReLU to the stage width, the block; a 1x1x1 conv (bias) gives the logits.
    """

    def __init__(
        self, width: int = DEFAULT_WIDTH_3D, block: str = "plain", negative_sigmoid: bool = False,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        self.width = width
        self.block = block
        cat_channels, stage_channels = _stage_channels(width)
        self.smooths = nn.ModuleList(ConvNormAct3d(i, o) for i, o in zip(cat_channels, stage_channels))
        self.stages = nn.ModuleList(
            make_block3d(block, o, negative_sigmoid=negative_sigmoid) for o in stage_channels
        )
        self.head = nn.Conv3d(width, out_channels, kernel_size=1)

    def _run_stage(self, index: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        y = torch.cat([y, skip], dim=1)
        if index < len(self.stages) - 1:
            y = upsample2x_3d(y)
        return self.stages[index](self.smooths[index](y))


class UNetDecoder3d(_StageDecoder3d):
    """3D U-Net decoder: stage 0 ``DoubleConv(cat(bridge, x4))`` at 1/16, then
    ``DoubleConv(cat(up(y), skip))``; a 1x1x1 conv (bias) gives the logits."""

    def __init__(self, width: int = DEFAULT_WIDTH_3D, out_channels: int = 1) -> None:
        super().__init__()
        self.width = width
        cat_channels, stage_channels = _stage_channels(width)
        self.stages = nn.ModuleList(DoubleConv3d(i, o) for i, o in zip(cat_channels, stage_channels))
        self.head = nn.Conv3d(width, out_channels, kernel_size=1)

    def _run_stage(self, index: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if index > 0:
            y = upsample2x_3d(y)
        return self.stages[index](torch.cat([y, skip], dim=1))


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
