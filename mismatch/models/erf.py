"""Effective receptive field (ERF) of blocks and branches, measured as Luo et al. (2016).

The ERF of a module is the mean absolute gradient of its centre output pixel (summed over
output channels) with respect to its input, averaged over ``n_inits`` random initialisations
(PyTorch's default init) and ``n_inputs`` standard-normal inputs per initialisation. The map is
normalised to unit mass and summarised by the radius of the smallest centred disc (Euclidean
distance, pixel centres) holding a share of the mass (50% and 90% by default), the number of
pixels in that disc ("area"), and the RMS radius ``sqrt(sum(mass * distance**2))``. Discs
rather than squares because the ERF of a conv stack is close to an isotropic Gaussian.

By default the InstanceNorm statistics are held fixed during the backward pass
(``norm_stats="frozen"``, the Jacobian of a normalisation layer in eval mode). With live
per-image statistics (``norm_stats="live"``) every InstanceNorm adds a spatially uniform
gradient term whose total mass does not shrink with the image size; it swamps the disc
statistics of small modules without saying anything about locality (see ``docs/models.md``).

The named branches are built from the real blocks of :mod:`mismatch.models.blocks`:
``main`` (the paper's ``f``: two 3x3 conv+IN+ReLU, ``PASB(c).main``), ``pasb`` and ``nasb``
(the side branches ``PASB(c).side`` / ``NASB(c).side``, without the PASB sigmoid), and the
whole blocks ``plain``, ``pasb-block``, ``nasb-block``. Any ``factory(channels) -> nn.Module``
that keeps the spatial size can be measured too.

``spatial_dims=3`` measures the same named branches of the 3D blocks of
:mod:`mismatch.models.blocks3d` on ``(S, S, S)`` volumes (``3x3x3`` context layers); the
summaries are then spheres (``area``: voxels in the sphere, ``edge_mass``: the outer shell).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mismatch.models.blocks import NASB, PASB, ConvNormAct, PlainBlock
from mismatch.models.blocks3d import ConvNormAct3d, NASB3d, PASB3d, PlainBlock3d

BlockFactory = Callable[[int], nn.Module]


def _branches(pasb: type[nn.Module], nasb: type[nn.Module], plain: type[nn.Module]) -> dict[str, BlockFactory]:
    """The measurable branches of one set of blocks (2D or 3D) by name."""
    return {
        "main": lambda channels: pasb(channels).main,
        "pasb": lambda channels: pasb(channels).side,
        "nasb": lambda channels: nasb(channels).side,
        "plain": plain,
        "pasb-block": pasb,
        "nasb-block": nasb,
    }


BRANCHES: dict[str, BlockFactory] = _branches(PASB, NASB, PlainBlock)
#: The same branch names on the 3D blocks (``spatial_dims=3``).
BRANCHES_3D: dict[str, BlockFactory] = _branches(PASB3d, NASB3d, PlainBlock3d)

#: Recommended defaults for ``mismatch erf`` (9 rows, about 3 s on 2 idle CPU cores).
DEFAULT_BRANCHES: tuple[str, ...] = ("main", "pasb", "nasb")
DEFAULT_DEPTHS: tuple[int, ...] = (0, 4, 8)


def _frozen_norm_hook(
    module: nn.InstanceNorm2d | nn.InstanceNorm3d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
) -> torch.Tensor:
    """Recompute InstanceNorm (2D or 3D) with detached per-image statistics (same forward value)."""
    (x,) = inputs
    spatial = tuple(range(2, x.ndim))
    mean = x.mean(dim=spatial, keepdim=True).detach()
    var = x.var(dim=spatial, unbiased=False, keepdim=True).detach()
    y = (x - mean) / torch.sqrt(var + module.eps)
    if module.affine:
        shape = (1, -1) + (1,) * len(spatial)
        y = y * module.weight.view(shape) + module.bias.view(shape)
    return y


@contextlib.contextmanager
def _norm_stats(model: nn.Module, mode: str) -> Iterator[None]:
    if mode not in ("frozen", "live"):
        raise ValueError(f"norm_stats must be 'frozen' or 'live', got {mode!r}")
    handles = []
    if mode == "frozen":
        for module in model.modules():
            if isinstance(module, (nn.InstanceNorm2d, nn.InstanceNorm3d)):
                handles.append(module.register_forward_hook(_frozen_norm_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _resolve(branch: str | BlockFactory, spatial_dims: int = 2) -> tuple[str, BlockFactory]:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if callable(branch):
        return getattr(branch, "__name__", type(branch).__name__), branch
    branches = BRANCHES if spatial_dims == 2 else BRANCHES_3D
    if branch not in branches:
        raise KeyError(f"unknown ERF branch {branch!r}; known: {sorted(branches)}")
    return branch, branches[branch]


def build_probe(
    factory: BlockFactory, channels: int, depth: int = 0, repeats: int = 1, spatial_dims: int = 2
) -> nn.Module:
    """``depth`` plain 3x3 (3x3x3 with ``spatial_dims=3``) conv+IN+ReLU layers, then
    ``repeats`` stacked ``factory(channels)``.

    The preceding layers put the branch in context: the paper's ERF argument is about a branch
    whose input is the output of an n-th layer.
    """
    context = ConvNormAct if spatial_dims == 2 else ConvNormAct3d
    layers = [context(channels, channels) for _ in range(depth)]
    layers += [factory(channels) for _ in range(repeats)]
    return nn.Sequential(*layers)


def _gradient_map(model: nn.Module, inputs: torch.Tensor, norm_stats: str) -> torch.Tensor:
    """Mean |d(centre output, summed over channels) / d input|, shape (S, S) or (S, S, S)."""
    x = inputs.clone().requires_grad_(True)  # (N, C, S, S) or (N, C, S, S, S)
    with _norm_stats(model, norm_stats):
        out = model(x)  # (N, C', *spatial); images are independent, so one backward serves all
    if out.shape[2:] != x.shape[2:]:
        raise ValueError(
            f"module must keep the spatial size: input {tuple(x.shape)}, output {tuple(out.shape)}"
        )
    centre = (x.shape[-1] // 2,) * (x.ndim - 2)
    out[(slice(None), slice(None), *centre)].sum().backward()
    return x.grad.abs().sum(dim=1).mean(dim=0)  # (*spatial)


def summarise_map(erf: np.ndarray, shares: Sequence[float] = (0.5, 0.9)) -> dict[str, float]:
    """Disc radius and area holding each share of the mass, RMS radius and edge mass.

    ``erf`` is a non-negative ``(S, S)`` map centred at ``(S // 2, S // 2)``, or an
    ``(S, S, S)`` volume (spheres then, areas in voxels). Keys: ``r50``, ``area50`` (pixels
    in the disc), ... per share, ``rms_radius``, and ``edge_mass`` (the mass on the outermost
    pixel ring or voxel shell: if it is not small, the image is too small).
    """
    size = erf.shape[-1]
    mass = erf / erf.sum()
    coords = np.arange(size) - size // 2
    if erf.ndim == 2:
        dist = np.hypot(coords[:, None], coords[None, :]).ravel()
    else:
        grids = np.meshgrid(*([coords] * erf.ndim), indexing="ij")
        dist = np.sqrt(sum(g.astype(np.float64) ** 2 for g in grids)).ravel()
    order = np.argsort(dist, kind="stable")
    radii, first = np.unique(dist[order], return_index=True)
    cum = np.cumsum(mass.ravel()[order])
    last = np.append(first[1:], len(order)) - 1  # last pixel index per distinct radius
    summary: dict[str, float] = {}
    for share in shares:
        k = int(np.searchsorted(cum[last], share - 1e-9))
        k = min(k, len(radii) - 1)
        key = f"{round(100 * share)}"
        summary[f"r{key}"] = float(radii[k])
        summary[f"area{key}"] = int(last[k] + 1)
    summary["rms_radius"] = float(math.sqrt((mass.ravel() * dist**2).sum()))
    border = np.ones_like(mass, dtype=bool)
    border[(slice(1, -1),) * mass.ndim] = False
    summary["edge_mass"] = float(mass[border].sum())
    return summary


def measure_erf(
    branch: str | BlockFactory,
    channels: int = 24,
    size: int = 33,
    n_inits: int = 8,
    n_inputs: int = 8,
    depth: int = 0,
    repeats: int = 1,
    seed: int = 0,
    shares: Sequence[float] = (0.5, 0.9),
    norm_stats: str = "frozen",
    return_map: bool = False,
    spatial_dims: int = 2,
) -> dict[str, Any]:
    """Measure the ERF of a named branch (see :data:`BRANCHES`) or of ``factory(channels)``.

    The probe is :func:`build_probe` (``depth`` plain conv layers, then ``repeats`` copies of the
    branch) on ``(n_inputs, channels, size, size)`` standard-normal inputs; use an odd ``size``
    so that the centre pixel is exact. ``spatial_dims=3`` measures the 3D blocks on
    ``(n_inputs, channels, size, size, size)`` volumes. The probe runs in training mode with all images in one
    batch, so a factory's module must not couple images (no train-mode BatchNorm).
    Deterministic for a given ``seed``; the global RNG is left untouched. Returns a row:
    ``branch``, ``depth``, ``repeats``, the settings, the :func:`summarise_map` figures and,
    with ``return_map``, the normalised ``(S, S)`` (or ``(S, S, S)``) map as a numpy array.
    """
    name, factory = _resolve(branch, spatial_dims)
    spatial = (size,) * spatial_dims
    total = torch.zeros(spatial, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(n_inits):
            model = build_probe(factory, channels, depth, repeats, spatial_dims)
            inputs = torch.randn(n_inputs, channels, *spatial)
            total += _gradient_map(model, inputs, norm_stats).double()
    erf = (total / total.sum()).numpy()
    row: dict[str, Any] = {
        "branch": name,
        "depth": depth,
        "repeats": repeats,
        "channels": channels,
        "size": size,
        "n_inits": n_inits,
        "n_inputs": n_inputs,
        "seed": seed,
        "norm_stats": norm_stats,
        "spatial_dims": spatial_dims,
    }
    row.update(summarise_map(erf, shares))
    if return_map:
        row["map"] = erf
    return row


def measure_all(
    branches: Sequence[str | BlockFactory] = DEFAULT_BRANCHES,
    depths: Sequence[int] = DEFAULT_DEPTHS,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """:func:`measure_erf` for every branch at every depth; ``kwargs`` go to it unchanged."""
    return [measure_erf(branch, depth=depth, **kwargs) for depth in depths for branch in branches]


def format_erf_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of ERF rows: branch, depth, repeats, disc radii/areas, RMS radius."""
    if not rows:
        return "(no rows)"
    radius_keys = [k for k in rows[0] if re.fullmatch(r"r\d+", k)]
    area_keys = [k for k in rows[0] if re.fullmatch(r"area\d+", k)]
    header = ["branch", "depth", "repeats"]
    header += [f"radius@{k[1:]}%" for k in radius_keys] + [f"area@{k[4:]}%" for k in area_keys]
    header += ["rms_radius", "edge_mass"]
    body = []
    for row in rows:
        cells = [str(row["branch"]), str(row["depth"]), str(row["repeats"])]
        cells += [f"{row[k]:.2f}" for k in radius_keys] + [str(row[k]) for k in area_keys]
        cells += [f"{row['rms_radius']:.2f}", f"{row['edge_mass']:.3f}"]
        body.append(cells)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
