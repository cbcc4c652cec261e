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

from mismatch.models.blocks import CONV, ConvNormAct, DoubleConv, make_block

FeatureTransform = Callable[[int, torch.Tensor], torch.Tensor]


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear (trilinear for volumes) x2 upsampling with ``align_corners=True``, as in the
    authors' code."""
    mode = "trilinear" if x.ndim == 5 else "bilinear"
    return F.interpolate(x, scale_factor=2.0, mode=mode, align_corners=True)


#: Downsampling levels of the 2D encoder (the 3D one has one more, as V-Net).
LEVELS_2D = 3


def stage_channels(width: int, levels: int = LEVELS_2D) -> tuple[list[int], list[int]]:
    """Per decoder stage, deep to shallow: the ``cat(y, skip)`` channels and the output channels
    (2D, 3 levels: ``16w, 8w, 4w, 2w`` -> ``4w, 2w, w, w``)."""
    skips = [width * 2**i for i in reversed(range(levels + 1))]  # [8w, 4w, 2w, w] in 2D
    return [2 * c for c in skips], [c // 2 for c in skips[:-1]] + [width]


def _check_features(features: Sequence[torch.Tensor], levels: int) -> None:
    if len(features) != levels + 2:
        names = ", ".join(f"x{i}" for i in range(levels + 1))
        raise ValueError(
            f"expected the encoder's {levels + 2} features [{names}, bridge], got {len(features)}"
        )


class _StageDecoder(nn.Module):
    """Shared plumbing: ``stages`` (``levels + 1`` modules, deep to shallow), ``head`` (1x1
    conv with bias), the stage hook; 2D or 3D by the modules it holds."""

    stages: nn.ModuleList
    head: nn.Module
    levels: int = LEVELS_2D

    def _run_stage(self, index: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_stages(
        self,
        features: Sequence[torch.Tensor],
        feature_transform: FeatureTransform | None = None,
    ) -> list[torch.Tensor]:
        """Run the stages and return their outputs (after ``feature_transform``).

        The last entry, ``(B, w, *spatial)``, is what the 1x1 output conv ``head`` reads.
        """
        _check_features(features, self.levels)
        skips = list(features[self.levels :: -1])  # [x3, x2, x1, x0] in 2D, deep to shallow
        y = features[-1]
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
        """Decode ``[x0, x1, x2, x3, bridge]`` (3D: ``x0..x4``) to logits ``(B, out_channels, *spatial)``."""
        return self.head(self.forward_stages(features, feature_transform)[-1])


class AttentionDecoder(_StageDecoder):
    """MisMatch's decoder layout, with a block kind: ``"plain"``, ``"pasb"`` or ``"nasb"``.

    Stage ``i`` (deep to shallow, skips ``x3, x2, x1, x0``): ``y = cat(y, skip)`` at the same
    resolution, bilinear x2 upsample (not in the last stage), a "smooth" 3x3 conv+IN+ReLU to
    the stage width (``4w, 2w, w, w``), then the block. A 1x1 conv (with bias) gives the logit.
    The bridge is concatenated with ``x3`` directly at H/8 (the authors' code crops a 2x zoom of
    the bridge instead, a defect not reproduced here). ``negative_sigmoid`` is passed to NASB;
    ``out_channels`` is the number of logits per pixel. ``dims`` and ``levels`` give the 3D
    twin (:class:`mismatch.models.networks3d.AttentionDecoder3d`: 3, 4).
    """

    def __init__(
        self, width: int = 24, block: str = "plain", negative_sigmoid: bool = False, out_channels: int = 1,
        dims: int = 2, levels: int = LEVELS_2D,
    ) -> None:
        super().__init__()
        self.width, self.block, self.levels = width, block, levels
        cat_channels, out = stage_channels(width, levels)
        self.smooths = nn.ModuleList(ConvNormAct(i, o, dims=dims) for i, o in zip(cat_channels, out))
        self.stages = nn.ModuleList(
            make_block(block, o, negative_sigmoid=negative_sigmoid, dims=dims) for o in out
        )
        self.head = CONV[dims](width, out_channels, kernel_size=1)

    def _run_stage(self, index: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        y = torch.cat([y, skip], dim=1)
        if index < len(self.stages) - 1:
            y = upsample2x(y)
        return self.stages[index](self.smooths[index](y))


class UNetDecoder(_StageDecoder):
    """Plain U-Net decoder: ``cat(up(y), skip)`` then a double conv, deep to shallow.

    Stage 0 concatenates the bridge with ``x3`` at H/8 (no upsample); stages 1..3 upsample
    ``y`` x2 (bilinear, ``align_corners=True``) and concatenate the skip. Double convs
    ``16w -> 4w``, ``8w -> 2w``, ``4w -> w``, ``2w -> w`` (U-Net order: convolve at the lower
    resolution, then upsample), then a 1x1 conv (with bias) to ``out_channels`` logits.
    ``dims`` and ``levels`` give the 3D twin (:class:`mismatch.models.networks3d.UNetDecoder3d`).
    """

    def __init__(self, width: int = 24, out_channels: int = 1, dims: int = 2, levels: int = LEVELS_2D) -> None:
        super().__init__()
        self.width, self.levels = width, levels
        cat_channels, out = stage_channels(width, levels)
        self.stages = nn.ModuleList(DoubleConv(i, o, dims=dims) for i, o in zip(cat_channels, out))
        self.head = CONV[dims](width, out_channels, kernel_size=1)

    def _run_stage(self, index: int, y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if index > 0:
            y = upsample2x(y)
        return self.stages[index](torch.cat([y, skip], dim=1))
