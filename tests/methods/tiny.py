"""Tiny methods and batches shared by the method tests (width 4, 16x16 slices)."""

from __future__ import annotations

import torch

from mismatch.config import load_trial_spec
from mismatch.methods import Batch, Method, build_method


def tiny_method(name: str, in_channels: int = 1, **settings) -> Method:
    """The method ``name`` at width 4, its settings validated as a study's would be."""
    spec = load_trial_spec({"data": {"synthetic": {}}, "method": {"name": name, "width": 4, **settings}})
    return build_method(spec.method, in_channels=in_channels)


def tiny_batch(labelled: list[bool], channels: int = 1, seed: int = 0) -> Batch:
    """Random 16x16 images and labels; ``labelled`` says which slices carry a label."""
    g = torch.Generator().manual_seed(seed)
    n = len(labelled)
    return Batch(torch.randn(n, channels, 16, 16, generator=g),
                 (torch.rand(n, 1, 16, 16, generator=g) > 0.5).float(), torch.tensor(labelled))
