"""Decoders: the attention-decoder layout of MisMatch (any block kind) and the U-Net decoder.

Both decoders take the encoder's feature list ``[x0, x1, x2, x3, bridge]`` and return
``out_channels`` logits per pixel, ``(B, out_channels, H, W)``: 1 (the foreground logit of a
binary task, the default) or C (one per class of a C-class task). Both run four stages, deep to shallow, and accept an
optional ``feature_transform(stage_index, features) -> features`` hook applied to the output of
every stage (index 0 is the deepest stage, 3 the last one before the 1x1 output conv). The hook
is how a method alters decoder features without copying a decoder, e.g. the Morph baseline's
erosion/dilation. :meth:`forward_stages` returns the (transformed) stage outputs themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mismatch.models.blocks import ConvNormAct, DoubleConv, make_block

FeatureTransform = Callable[[int, torch.Tensor], torch.Tensor]


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling with ``align_corners=True``, as in the authors' code."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


def _check_features(features: Sequence[torch.Tensor]) -> None:
    if len(features) != 5:
        raise ValueError(
            f"expected the encoder's 5 features [x0, x1, x2, x3, bridge], got {len(features)}"
        )


class _FourStageDecoder(nn.Module):
    """Shared plumbing: ``stages`` (4 modules), ``head`` (1x1 conv with bias), the hook."""

    stages: nn.ModuleList
    head: nn.Conv2d

    def _run_stage(self, index: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_stages(
        self,
        features: Sequence[torch.Tensor],
        feature_transform: FeatureTransform | None = None,
    ) -> list[torch.Tensor]:
        """Run the four stages and return their outputs (after ``feature_transform``).

        The last entry, ``(B, w, H, W)``, is what the 1x1 output conv ``head`` reads.
        """
        _check_features(features)
        skips = list(features[3::-1])  # [x3, x2, x1, x0], deep to shallow
        y = features[4]
        outputs = []
        for index, skip in enumerate(skips):
            y = self._run_stage(index, y, skip)
            if feature_transform is not None:
                y = feature_transform(index, y)
            outputs.append(y)
        return outputs

    def forward(
        self,
        features: Sequence[torch.Tensor],
        feature_transform: FeatureTransform | None = None,
    ) -> torch.Tensor:
        """Decode ``[x0, x1, x2, x3, bridge]`` to logits ``(B, out_channels, H, W)``."""
        return self.head(self.forward_stages(features, feature_transform)[-1])


class AttentionDecoder(_FourStageDecoder):
    """MisMatch's decoder layout, with a block kind: ``"plain"``, ``"pasb"`` or ``"nasb"``.

    Stage ``i`` (deep to shallow, skips ``x3, x2, x1, x0``): ``y = cat(y, skip)`` at the same
    resolution, bilinear x2 upsample (not in the last stage), a "smooth" 3x3 conv+IN+ReLU to
    the stage width (``4w, 2w, w, w``), then the block. A 1x1 conv (with bias) gives the logit.
    The bridge is concatenated with ``x3`` directly at H/8 (the authors' code crops a 2x zoom of
    the bridge instead, a defect not reproduced here). ``negative_sigmoid`` is passed to NASB;
    ``out_channels`` is the number of logits per pixel.
    """

    def __init__(
        self, width: int = 24, block: str = "plain", negative_sigmoid: bool = False, out_channels: int = 1
    ) -> None:
        super().__init__()
        self.width = width
        self.block = block
        w = width
        in_channels = [16 * w, 8 * w, 4 * w, 2 * w]  # cat(y, skip) per stage
        stage_channels = [4 * w, 2 * w, w, w]
        self.smooths = nn.ModuleList(ConvNormAct(i, o) for i, o in zip(in_channels, stage_channels))
        self.stages = nn.ModuleList(
            make_block(block, o, negative_sigmoid=negative_sigmoid) for o in stage_channels
        )
        self.head = nn.Conv2d(w, out_channels, kernel_size=1)

    def _run_stage(self, index: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        y = torch.cat([y, skip], dim=1)
        if index < len(self.stages) - 1:
            y = upsample2x(y)
        return self.stages[index](self.smooths[index](y))


class UNetDecoder(_FourStageDecoder):
    """Plain U-Net decoder: ``cat(up(y), skip)`` then a double conv, deep to shallow.

    Stage 0 concatenates the bridge with ``x3`` at H/8 (no upsample); stages 1..3 upsample
    ``y`` x2 (bilinear, ``align_corners=True``) and concatenate the skip. Double convs
    ``16w -> 4w``, ``8w -> 2w``, ``4w -> w``, ``2w -> w`` (U-Net order: convolve at the lower
    resolution, then upsample), then a 1x1 conv (with bias) to ``out_channels`` logits.
    """

    def __init__(self, width: int = 24, out_channels: int = 1) -> None:
        super().__init__()
        self.width = width
        w = width
        in_channels = [16 * w, 8 * w, 4 * w, 2 * w]
        stage_channels = [4 * w, 2 * w, w, w]
        self.stages = nn.ModuleList(DoubleConv(i, o) for i, o in zip(in_channels, stage_channels))
        self.head = nn.Conv2d(w, out_channels, kernel_size=1)

    def _run_stage(self, index: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if index > 0:
            y = upsample2x(y)
        return self.stages[index](torch.cat([y, skip], dim=1))
