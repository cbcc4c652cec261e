"""Networks: an encoder plus one or more decoders, and the factories their cards name.

Every network has ``encoder`` (:class:`~mismatch.models.encoder.Encoder`), ``decoders``
(``nn.ModuleList``) and ``num_decoders``; ``forward(x)`` returns the list of per-decoder
logits, each ``(B, K, H, W)`` with ``K = out_channels`` (1 for a binary task: the foreground logit; C for
C classes), and ``probabilities(x)`` the decoders' mean probability (sigmoid for one channel,
softmax over the C channels otherwise: :func:`mismatch.losses.probabilities`). Methods that need
more (CCT's perturbed encoder output, Morph's eroded/dilated decoder features) compose the
parts themselves::

    features = net.encoder(x)                      # [x0, x1, x2, x3, bridge]
    features[-1] = perturb(features[-1])            # CCT
    logits = net.decoders[0](features, feature_transform=erode)   # Morph
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mismatch.losses import probabilities
from mismatch.models.decoders import AttentionDecoder, UNetDecoder
from mismatch.models.encoder import Encoder


class EncoderDecoderNet(nn.Module):
    """An encoder shared by one or more decoders, each producing ``K`` logits per pixel.

    ``forward(x)`` with ``x`` of shape ``(B, C_in, H, W)`` (H, W multiples of 8) returns
    ``[logits_0, ..., logits_{D-1}]``, each ``(B, K, H, W)`` (``K = 1`` for a binary task).
    """

    def __init__(self, encoder: Encoder, decoders: Sequence[nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoders = nn.ModuleList(decoders)

    @property
    def num_decoders(self) -> int:
        """Number of decoders, i.e. length of the list ``forward`` returns."""
        return len(self.decoders)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.encoder(x)
        return [decoder(features) for decoder in self.decoders]

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over decoders of their probabilities (sigmoid of one channel, else softmax over
        the classes), shape ``(B, K, H, W)``."""
        return torch.stack([probabilities(logits) for logits in self(x)]).mean(dim=0)


class UNet(EncoderDecoderNet):
    """Plain U-Net: :class:`Encoder` + :class:`UNetDecoder` (Sup1, backbone of baselines)."""

    def __init__(self, in_channels: int = 1, width: int = 24, out_channels: int = 1) -> None:
        super().__init__(Encoder(in_channels, width), [UNetDecoder(width, out_channels)])


class TwoDecoderNet(EncoderDecoderNet):
    """An encoder with two :class:`AttentionDecoder` s of the given block kinds.

    ``TwoDecoderNet(Encoder(1, 24), "pasb", "nasb")`` is MisMatch (decoder 1 positive,
    decoder 2 negative); the ablations use ``"plain"`` decoders. ``negative_sigmoid`` is
    passed to NASB blocks (default ``False``: no sigmoid, as in the authors' 2D code). Each
    decoder outputs ``out_channels`` logits per pixel.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder1_block: str = "pasb",
        decoder2_block: str = "nasb",
        negative_sigmoid: bool = False,
        out_channels: int = 1,
    ) -> None:
        decoders = [
            AttentionDecoder(encoder.width, block, negative_sigmoid=negative_sigmoid, out_channels=out_channels)
            for block in (decoder1_block, decoder2_block)
        ]
        super().__init__(encoder, decoders)


def unet(in_channels: int = 1, width: int = 24, out_channels: int = 1) -> UNet:
    """U-Net (1,879,777 parameters at width 24, one input channel, one output channel)."""
    return UNet(in_channels, width, out_channels)


def _two_decoder(
    in_channels: int, width: int, block1: str, block2: str, negative_sigmoid: bool, out_channels: int
) -> TwoDecoderNet:
    return TwoDecoderNet(Encoder(in_channels, width), block1, block2, negative_sigmoid, out_channels)


def mm(in_channels: int = 1, width: int = 24, negative_sigmoid: bool = False, out_channels: int = 1) -> TwoDecoderNet:
    """MisMatch: PASB decoder + NASB decoder (2,681,132 parameters at width 24)."""
    return _two_decoder(in_channels, width, "pasb", "nasb", negative_sigmoid, out_channels)


def mm_a(in_channels: int = 1, width: int = 24, out_channels: int = 1) -> TwoDecoderNet:
    """Ablation MM-a: plain + plain decoders (2,440,442 parameters at width 24)."""
    return _two_decoder(in_channels, width, "plain", "plain", False, out_channels)


def mm_b(in_channels: int = 1, width: int = 24, negative_sigmoid: bool = False, out_channels: int = 1) -> TwoDecoderNet:
    """Ablation MM-b: plain + NASB decoders (2,561,702 parameters at width 24)."""
    return _two_decoder(in_channels, width, "plain", "nasb", negative_sigmoid, out_channels)


def mm_c(in_channels: int = 1, width: int = 24, out_channels: int = 1) -> TwoDecoderNet:
    """Ablation MM-c: plain + PASB decoders (2,559,872 parameters at width 24)."""
    return _two_decoder(in_channels, width, "plain", "pasb", False, out_channels)
