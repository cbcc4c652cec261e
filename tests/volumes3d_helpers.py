"""Test helpers for 3D trials: a small MSD-layout volume dataset and a tiny 3D network (the
sliding-window tests' model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mismatch.data.msd import write_case, write_dataset_json

SPACING = (2.0, 0.75, 0.5)  # mm along (S, H, W): anisotropic, so a swapped axis shows


def write_volume_dataset(root: Path, cases: int = 5, shape: tuple[int, int, int] = (16, 24, 20), seed: int = 0,
                         sizes: list[tuple[int, int, int]] | None = None) -> Path:
    """An MSD-layout dataset of ``cases`` volumes (S, H, W), each an ellipsoid (label 1) brighter
    than a noisy background; ``sizes`` gives each case its own shape. NIfTI, written by nibabel."""
    rng = np.random.default_rng(seed)
    affine = np.diag([SPACING[1], SPACING[2], SPACING[0], 1.0])  # NIfTI stores (H, W, S)
    for i in range(cases):
        s, h, w = sizes[i] if sizes else shape
        z, y, x = np.meshgrid(np.arange(s), np.arange(h), np.arange(w), indexing="ij")
        centre = [rng.uniform(0.35, 0.65) * n for n in (s, h, w)]
        radii = [max(2.0, 0.25 * n) for n in (s, h, w)]
        inside = sum(((a - c) / r) ** 2 for a, c, r in zip((z, y, x), centre, radii)) <= 1.0
        label = inside.astype(np.uint8)
        image = 100.0 + 20.0 * label + rng.normal(0.0, 5.0, label.shape)
        write_case(root, f"vol_{i:03d}", image[None].astype(np.float32), label, affine)
    write_dataset_json(root, name="vol3d", channel_names=["MRI"], labels={"background": 0, "blob": 1},
                       num_training=cases)
    return root


class Tiny3D(nn.Module):
    """A fully convolutional 3D network: ``decoders`` heads on one 3x3x3 feature layer
    (``kernel`` 1 makes it voxel-wise: no boundary effects, so any window gives the same voxels)."""

    def __init__(self, in_channels: int = 1, width: int = 4, decoders: int = 1, kernel: int = 3, **_: object) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(in_channels, width, kernel, padding=kernel // 2), nn.ReLU())
        self.decoders = nn.ModuleList(nn.Conv3d(width, 1, kernel, padding=kernel // 2) for _ in range(decoders))
        for i, decoder in enumerate(self.decoders):
            decoder.block = ("pasb", "nasb")[i % 2]

    @property
    def num_decoders(self) -> int:
        return len(self.decoders)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.features(x)
        return [decoder(h) for decoder in self.decoders]

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.stack(self(x))).mean(dim=0)

