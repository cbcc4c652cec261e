"""Tensor augmentations shared by the baselines: flips, Gaussian noise and RandAugment.

Every function works on batches ``(B, C, H, W)`` (:func:`gaussian_noise` and
:func:`random_flip` also on 3D patches ``(B, C, D, H, W)``) and draws its randomness from torch's
global RNG (the training loop seeds it, so runs are deterministic on the CPU). Geometric
operations take ``targets`` (labels, pseudo-labels, confidence masks: ``(B, T, H, W)``) and
apply to them exactly the transform they apply to the image, so that image and target pixels
stay paired; photometric operations leave targets untouched.

RandAugment (Cubuk et al. 2020) as FixMatch uses it (Sohn et al. 2020): ``n_ops`` operations
drawn uniformly with replacement per image, each with a magnitude drawn uniformly in
``[0, max_magnitude]``. Shear is left out (it breaks the pixel pairing of dense outputs, as
the MisMatch paper notes), and so are the operations that only make sense on 8-bit RGB
images. Photometric operations act on each channel rescaled to [0, 1] by its own min and
max, then mapped back, because slices are z-scored rather than 8-bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

#: An operation: ``(image (1, C, H, W), targets (1, T, H, W), magnitude in [0, 1]) -> both``.
AugmentOp = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]

MAX_TRANSLATE = 0.3  # fraction of the image side (FixMatch's RandAugment range)
MAX_ROTATE_DEG = 30.0
MAX_FACTOR = 0.9  # brightness/contrast/sharpness factors in [1 - 0.9 m, 1 + 0.9 m]
MAX_NOISE = 0.1  # std of the noise op, in units of the [0, 1]-rescaled intensity range


def gaussian_noise(x: torch.Tensor, std: float) -> torch.Tensor:
    """``x + std * N(0, 1)``, elementwise (the paper's "Gaussian noise" augmentation)."""
    if std == 0:
        return x
    return x + std * torch.randn_like(x)


def random_flip(image: torch.Tensor, *targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Flip each slice along every spatial axis (left-right, up-down, and in 3D front-back),
    each with probability 0.5, targets alike.

    Returns ``(image, *targets)``; each slice (or patch) of the batch draws its own flips.
    """
    out = (image, *targets)
    shape = (-1, *([1] * (image.ndim - 1)))
    for dim in range(-1, 1 - image.ndim, -1):  # (-1, -2) in 2D, (-1, -2, -3) in 3D
        flip = torch.rand(image.shape[0], device=image.device) < 0.5  # (B,)
        out = tuple(torch.where(flip.view(shape), t.flip(dim), t) for t in out)
    return out


def _sign() -> float:
    return 1.0 if torch.rand(()) < 0.5 else -1.0


# ---------------------------------------------------------------- photometric operations


def _unit_range(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> AugmentOp:
    """Lift ``fn(u, magnitude)`` on [0, 1]-rescaled channels to an :data:`AugmentOp`."""

    def op(image: torch.Tensor, targets: torch.Tensor, magnitude: float) -> tuple[torch.Tensor, torch.Tensor]:
        lo = image.amin(dim=(-2, -1), keepdim=True)  # (1, C, 1, 1)
        scale = (image.amax(dim=(-2, -1), keepdim=True) - lo).clamp_min(1e-6)
        u = (image - lo) / scale
        return fn(u, magnitude) * scale + lo, targets

    op.__name__ = fn.__name__
    return op


def _blur(u: torch.Tensor) -> torch.Tensor:
    """3x3 smoothing (PIL's SMOOTH kernel: centre 5, others 1), replicate padding."""
    kernel = torch.ones(3, 3, dtype=u.dtype, device=u.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(u.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(u, (1, 1, 1, 1), mode="replicate"), kernel, groups=u.shape[1])


def _identity(u: torch.Tensor, m: float) -> torch.Tensor:
    return u


def _brightness(u: torch.Tensor, m: float) -> torch.Tensor:
    return u * (1 + _sign() * MAX_FACTOR * m)


def _contrast(u: torch.Tensor, m: float) -> torch.Tensor:
    mean = u.mean(dim=(-2, -1), keepdim=True)
    return mean + (u - mean) * (1 + _sign() * MAX_FACTOR * m)


def _sharpness(u: torch.Tensor, m: float) -> torch.Tensor:
    """Factor < 1 blurs, > 1 sharpens (unsharp masking)."""
    smooth = _blur(u)
    return smooth + (u - smooth) * (1 + _sign() * MAX_FACTOR * m)


def _gamma(u: torch.Tensor, m: float) -> torch.Tensor:
    return u.clamp_min(0) ** math.exp(_sign() * m * math.log(2.0))  # gamma in [1/2, 2]


def _solarize(u: torch.Tensor, m: float) -> torch.Tensor:
    return torch.where(u > 1 - m, 1 - u, u)


def _posterize(u: torch.Tensor, m: float) -> torch.Tensor:
    levels = 2 ** (8 - round(4 * m))  # 256 .. 16 grey levels
    return torch.round(u * (levels - 1)) / (levels - 1)


def _equalize(u: torch.Tensor, m: float) -> torch.Tensor:
    """Histogram equalisation as a rank transform per channel."""
    flat = u.flatten(2)  # (1, C, H*W)
    ranks = flat.argsort(dim=-1).argsort(dim=-1).to(u.dtype)
    return (ranks / max(flat.shape[-1] - 1, 1)).view_as(u)


def _noise(u: torch.Tensor, m: float) -> torch.Tensor:
    return u + MAX_NOISE * m * torch.randn_like(u)


PHOTOMETRIC_OPS: dict[str, AugmentOp] = {
    "identity": _unit_range(_identity),
    "brightness": _unit_range(_brightness),
    "contrast": _unit_range(_contrast),
    "sharpness": _unit_range(_sharpness),
    "gamma": _unit_range(_gamma),
    "solarize": _unit_range(_solarize),
    "posterize": _unit_range(_posterize),
    "equalize": _unit_range(_equalize),
    "noise": _unit_range(_noise),
}

# ---------------------------------------------------------------- geometric operations


def _hflip(image: torch.Tensor, targets: torch.Tensor, m: float) -> tuple[torch.Tensor, torch.Tensor]:
    return image.flip(-1), targets.flip(-1)


def _vflip(image: torch.Tensor, targets: torch.Tensor, m: float) -> tuple[torch.Tensor, torch.Tensor]:
    return image.flip(-2), targets.flip(-2)


def _rot90(image: torch.Tensor, targets: torch.Tensor, m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A quarter, half or three-quarter turn (only the half turn for non-square slices)."""
    square = image.shape[-1] == image.shape[-2]
    k = int(torch.randint(1, 4, ())) if square else 2
    return torch.rot90(image, k, (-2, -1)), torch.rot90(targets, k, (-2, -1))


def shift(x: torch.Tensor, pixels: int, dim: int) -> torch.Tensor:
    """Shift ``x`` by an integer number of pixels along ``dim``, filling with zeros."""
    out = torch.zeros_like(x)
    n = x.shape[dim]
    if abs(pixels) >= n:
        return out
    if pixels >= 0:
        out.narrow(dim, pixels, n - pixels).copy_(x.narrow(dim, 0, n - pixels))
    else:
        out.narrow(dim, 0, n + pixels).copy_(x.narrow(dim, -pixels, n + pixels))
    return out


def _translate(dim: int) -> AugmentOp:
    def op(image: torch.Tensor, targets: torch.Tensor, m: float) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = int(_sign() * round(MAX_TRANSLATE * m * image.shape[dim]))
        return shift(image, pixels, dim), shift(targets, pixels, dim)

    return op


def _rotate(image: torch.Tensor, targets: torch.Tensor, m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation by up to 30 degrees about the centre; image bilinear, targets nearest, zero fill."""
    angle = math.radians(_sign() * MAX_ROTATE_DEG * m)
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=image.dtype, device=image.device)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)  # (1, H, W, 2)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    targets = F.grid_sample(targets, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return image, targets


GEOMETRIC_OPS: dict[str, AugmentOp] = {
    "hflip": _hflip,
    "vflip": _vflip,
    "rot90": _rot90,
    "translate_x": _translate(-1),
    "translate_y": _translate(-2),
    "rotate": _rotate,
}

RANDAUGMENT_OPS: dict[str, AugmentOp] = {**PHOTOMETRIC_OPS, **GEOMETRIC_OPS}
#: Every operation's name, the default operation set of FixMatch's strong view.
RANDAUGMENT_NAMES: tuple[str, ...] = tuple(RANDAUGMENT_OPS)


def rand_augment(
    image: torch.Tensor,
    targets: torch.Tensor,
    n_ops: int = 2,
    max_magnitude: float = 1.0,
    ops: Sequence[str] = RANDAUGMENT_NAMES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RandAugment without shear: a strongly augmented image and its paired targets.

    ``image`` is ``(B, C, H, W)``, ``targets`` ``(B, T, H, W)``; each slice draws ``n_ops``
    operations from ``ops`` (with replacement) and a magnitude in ``[0, max_magnitude]`` for
    each. Geometric operations move the targets exactly as the image (out-of-image pixels
    become 0, so a zero confidence mask excludes them); photometric ones leave them as they are.
    """
    unknown = set(ops) - set(RANDAUGMENT_OPS)
    if unknown:
        raise ValueError(f"unknown RandAugment operations {sorted(unknown)}; known: {list(RANDAUGMENT_OPS)}")
    images, target_list = [], []
    for b in range(image.shape[0]):
        img, tgt = image[b : b + 1], targets[b : b + 1]  # (1, C, H, W), (1, T, H, W)
        for index in torch.randint(len(ops), (n_ops,)).tolist():
            magnitude = float(torch.rand(())) * max_magnitude
            img, tgt = RANDAUGMENT_OPS[ops[index]](img, tgt, magnitude)
        images.append(img)
        target_list.append(tgt)
    return torch.cat(images), torch.cat(target_list)


# ---------------------------------------------------------------- UniMatch's strong view


def _to_unit(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each slice's channels rescaled to [0, 1] by their min and max: ``(u, lo, scale)``."""
    lo = image.amin(dim=(-2, -1), keepdim=True)
    scale = (image.amax(dim=(-2, -1), keepdim=True) - lo).clamp_min(1e-6)
    return (image - lo) / scale, lo, scale


def colour_jitter(image: torch.Tensor, strength: float = 0.5, p: float = 0.8) -> torch.Tensor:
    """torchvision's ``ColorJitter(strength, strength, ...)`` on grey-level slices, per slice.

    With probability ``p`` a slice gets a brightness factor and a contrast factor, each
    uniform in ``[1 - strength, 1 + strength]``, applied in random order on the slice rescaled
    to [0, 1] and clipped there (as PIL clips 8-bit values), then mapped back. Contrast blends
    with the slice's mean grey level. Saturation, hue and greyscale leave one-channel images
    unchanged (PIL's own behaviour), so they are not drawn.
    """
    u, lo, scale = _to_unit(image)
    out = []
    for b in range(image.shape[0]):
        x = image[b]  # a slice left alone stays bit-for-bit the same
        if float(torch.rand(())) < p:
            factors = 1 - strength + 2 * strength * torch.rand(2)
            order = (0, 1) if float(torch.rand(())) < 0.5 else (1, 0)
            x = u[b]
            for op in order:
                f = float(factors[op])
                x = (x * f if op == 0 else x.mean() + (x - x.mean()) * f).clamp(0, 1)
            x = x * scale[b] + lo[b]
        out.append(x)
    return torch.stack(out)


def gaussian_blur(image: torch.Tensor, p: float = 0.5, sigma: tuple[float, float] = (0.1, 2.0)) -> torch.Tensor:
    """With probability ``p`` per slice, a Gaussian blur of standard deviation ``U(sigma)``
    (PIL's ``GaussianBlur(radius=sigma)`` as UniMatch; kernel ``2 ceil(3 sigma) + 1``,
    replicate padding)."""
    out = []
    for b in range(image.shape[0]):
        x = image[b : b + 1]
        if float(torch.rand(())) < p:
            s = sigma[0] + (sigma[1] - sigma[0]) * float(torch.rand(()))
            radius = math.ceil(3 * s)
            t = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
            g = torch.exp(-(t**2) / (2 * s * s))
            g = g / g.sum()
            c = x.shape[1]
            x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
            x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
            x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
        out.append(x)
    return torch.cat(out)
