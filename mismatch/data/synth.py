"""Synthetic phantom datasets, deterministic from a seed, written in the MSD layout (or in the
benchmarks' HDF5 layouts).

Two kinds in the MSD layout:

- ``vessels``: CT-like chest slab in Hounsfield units (air -1000, body 40, lung
  parenchyma about -850) with branching tubular vessel trees of decreasing radius,
  partial volume at the vessel walls, Gaussian noise; label 1 = vessel.
- ``tumours``: MR-like brain with four modalities (t1, t1ce, t2, flair), an irregular
  tumour with MSD BrainTumour labels (1 edema, 2 non-enhancing, 3 enhancing), per-modality
  contrast, a smooth bias field and noise; background outside the brain is exactly 0.
- ``organs3d``: a 3D multi-class phantom for the 3D networks: an MR-like abdomen with two
  kidneys made of nested wobbly ellipsoids (1 cortex, 2 medulla, 3 pelvis), an unlabelled
  liver-like organ and a spine as distractors, a smooth intensity field per tissue, a bias
  field and noise. Default 12 cases of 48 x 64 x 64 voxels of 3 x 3 x 4 mm (each side
  divisible by 16, so a whole volume is a valid 3D patch).

And two in the HDF5 layouts of :mod:`mismatch.data.h5layouts` (``mismatch data synth
la2018-h5|acdc-h5``), so tests and users need no download:

- ``la2018-h5``: MR-like volumes stored (X, Y, Z) with an atrium-like blob and vessel-like
  tubes leaving it (label 1), z-scored intensities as UA-MT writes them; x and y vary a little
  per case (UA-MT crops around the atrium); 1 in 5 cases in ``test.list``, the rest in ``train.list``.
- ``acdc-h5``: cardiac-MR-like volumes stored (Z, Y, X) with three nested classes (1 RV,
  2 myocardium ring, 3 LV cavity), intensities in [0, 1]; ``cases`` patients, two frames
  each (``patientNNN_frame01`` and ``_frame10``), their training slices, and the four lists
  (patients split train / val / test about 7 : 1 : 2).

Case ``i`` of a dataset depends only on ``(seed, i)``, so a dataset of 5 cases equals the
first 5 cases of a dataset of 10 with the same seed. Geometry is defined relative to the
image size, so phantoms of any size look alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mismatch.atomic import disk_full_names, remove_stale_siblings, temporary_sibling
from mismatch.config import SynthSpec
from mismatch.data.errors import DataError
from mismatch.data.msd import DATASET_JSON, write_case, write_dataset_json
from mismatch.data.publish import publish, refuse_non_empty

# Bump when a change to the generators changes their output: it invalidates cached phantoms.
PHANTOM_VERSION = 1

VESSEL_HU = 40.0
BODY_HU = 40.0
LUNG_HU = -850.0
AIR_HU = -1000.0
CT_NOISE_HU = 20.0


@dataclass(frozen=True)
class PhantomKind:
    """A phantom generator and the dataset.json facts that go with it."""

    name: str
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    image_dtype: type
    field_of_view_mm: float
    slice_factor: Callable[[tuple[int, int], int], float]
    generate: Callable[[np.random.Generator, tuple[int, int], int], tuple[np.ndarray, np.ndarray]]
    description: str
    default_cases: int = 10
    default_size: tuple[int, int] = (64, 64)
    default_slices: int = 24


def make_phantom(
    kind: str, size: tuple[int, int], slices: int, seed: int, index: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Case ``index`` of a phantom dataset: image (C, S, H, W), label (S, H, W), affine.

    The image is rounded to the dtype it is stored in, so it equals what a reader loads.
    """
    spec = phantom_kind(kind)
    h, w = size
    if h < 16 or w < 16 or slices < 1:
        raise DataError(f"phantom size must be at least 16x16 with >= 1 slice, got {size}x{slices}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    image, label = spec.generate(rng, (h, w), slices)
    image = np.rint(image).astype(spec.image_dtype).astype(np.float32)
    spacing = spec.field_of_view_mm / max(h, w)
    affine = _affine((spacing, spacing, spacing * spec.slice_factor((h, w), slices)), (h, w, slices))
    return image, label.astype(np.uint8), affine


def phantom_kind(kind: str) -> PhantomKind:
    """The phantom kind registered as ``kind`` (``vessels`` or ``tumours``)."""
    kinds = _phantom_kinds()
    if kind not in kinds:
        raise DataError(f"unknown phantom kind {kind!r} (known: {', '.join(sorted([*kinds, *H5_PHANTOMS]))})")
    return kinds[kind]


def synth_defaults(kind: str) -> tuple[int, tuple[int, int], int]:
    """``(cases, (H, W), slices)`` that ``mismatch data synth KIND`` writes when not told."""
    if kind in H5_PHANTOMS:
        return 10, (64, 64), 24
    spec = phantom_kind(kind)
    return spec.default_cases, spec.default_size, spec.default_slices


def write_synthetic_dataset(
    out_dir: str | Path,
    kind: str,
    cases: int,
    size: tuple[int, int] | None = None,
    slices: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a phantom dataset in the MSD layout to ``out_dir`` and return its path.

    ``size`` and ``slices`` default to the kind's own (:func:`synth_defaults`: 64 x 64 x 24
    for most kinds, 64 x 64 x 48 for ``organs3d``).

    Written atomically: the cases go to a temporary sibling folder that is renamed to
    ``out_dir`` at the end, so a crash never leaves a half-written dataset. A non-empty
    ``out_dir`` is refused (:class:`OutputExistsError`, a ``DataError`` and a
    ``FileExistsError``) unless ``overwrite`` is true. This is ``mismatch data synth``.
    """
    out = Path(out_dir).expanduser().absolute()
    _, default_size, default_slices = synth_defaults(kind)
    size = default_size if size is None else size
    slices = default_slices if slices is None else slices
    if kind in H5_PHANTOMS:
        min_cases = H5_PHANTOMS[kind][1]
        if cases < min_cases:
            raise DataError(f"{kind} phantoms need cases >= {min_cases} (a case in every list), got {cases}")
        if min(size) < 16 or slices < 4:
            raise DataError(f"phantom size must be at least 16x16 with >= 4 slices, got {size}x{slices}")

        def write(tmp: Path) -> None:
            H5_PHANTOMS[kind][0](tmp, cases, tuple(size), slices, seed)
    else:
        spec = phantom_kind(kind)

        def write(tmp: Path) -> None:
            _write_into(tmp, spec, cases, tuple(size), slices, seed)
    if cases < 1:
        raise DataError(f"cases must be >= 1, got {cases}")
    refuse_non_empty(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(out)  # the temporary folders of killed earlier runs
    tmp = temporary_sibling(out)
    try:
        with disk_full_names(out):
            write(tmp)
            publish(tmp, out, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def synthetic_dataset(spec: SynthSpec, cache_dir: str | Path | None = None) -> Path:
    """The folder of the phantom dataset ``spec``, generated into the cache if absent.

    The folder is keyed by the spec's content and :data:`PHANTOM_VERSION`. Several
    processes may generate the same dataset at once: each writes a temporary folder and
    renames it into place; a process that loses the race discards its copy.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = root / "synthetic" / f"{spec.kind}-{synth_key(spec)}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    try:
        _write_into(tmp, phantom_kind(spec.kind), spec.cases, spec.size, spec.slices, spec.seed)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / DATASET_JSON).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def synth_key(spec: SynthSpec) -> str:
    """Short content hash of a synthetic spec and the generator version."""
    payload = json.dumps(
        {"spec": spec.model_dump(mode="json"), "version": PHANTOM_VERSION}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$MISMATCH_CACHE`` if set, else ``~/.cache/mismatch``."""
    env = os.environ.get("MISMATCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mismatch"


# ----------------------------------------------------------------------------- writing


def _write_into(
    root: Path, spec: PhantomKind, cases: int, size: tuple[int, int], slices: int, seed: int
) -> None:
    for i in range(cases):
        image, label, affine = make_phantom(spec.name, size, slices, seed, i)
        write_case(root, f"{spec.name}_{i:03d}", image, label, affine, spec.image_dtype)
    write_dataset_json(
        root,
        name=f"synthetic-{spec.name}",
        channel_names=spec.channel_names,
        labels=spec.labels,
        num_training=cases,
        description=f"{spec.description} (seed {seed}, {size[0]}x{size[1]}x{slices}, "
        f"phantom version {PHANTOM_VERSION})",
    )


def _affine(spacing: tuple[float, float, float], shape_hws: tuple[int, int, int]) -> np.ndarray:
    """Voxel ``spacing`` (mm) along the NIfTI axes (H, W, S), the volume centred on the origin."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-d * (n - 1) / 2 for d, n in zip(spacing, shape_hws)]
    return affine


# ----------------------------------------------------------------------------- shared pieces


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates normalised to (0, 1) per axis, broadcastable to ``shape``."""
    s, h, w = shape
    z = ((np.arange(s) + 0.5) / s)[:, None, None]
    y = ((np.arange(h) + 0.5) / h)[None, :, None]
    x = ((np.arange(w) + 0.5) / w)[None, None, :]
    return z.astype(np.float32), y.astype(np.float32), x.astype(np.float32)


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], waves: int = 8, max_freq: float = 2.5
) -> np.ndarray:
    """A smooth random field with zero mean and unit standard deviation (random cosines)."""
    z, y, x = _grid(shape)
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(waves):
        kz, ky, kx = rng.uniform(-max_freq, max_freq, size=3)
        phase = rng.uniform(0, 2 * np.pi)
        field += np.cos(2 * np.pi * (kz * z + ky * y + kx * x) + phase, dtype=np.float32)
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


def _ellipsoid_radius(
    z: np.ndarray, y: np.ndarray, x: np.ndarray, centre: np.ndarray, radii: np.ndarray
) -> np.ndarray:
    """Normalised ellipsoidal distance: < 1 inside the ellipsoid."""
    return np.sqrt(
        ((z - centre[0]) / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((x - centre[2]) / radii[2]) ** 2
    )


# ----------------------------------------------------------------------------- vessels


def _vessels(rng: np.random.Generator, size: tuple[int, int], slices: int):
    """CT-like chest slab with vessel trees: image (1, S, H, W) in HU, label (S, H, W)."""
    shape = (slices, *size)
    chest = _Chest.sample(rng, shape, slice_factor(size, slices))
    body, lungs = chest.masks()
    segments = _vessel_trees(rng, chest)
    occupancy = _render_tubes(segments, shape, chest.zf) * lungs  # (S, H, W) vessel fraction
    hu = np.where(body, BODY_HU, AIR_HU).astype(np.float32)
    hu[lungs] = LUNG_HU + 25.0 * _smooth_field(rng, shape, max_freq=4.0)[lungs]
    hu += occupancy * (VESSEL_HU - hu)  # partial volume: blend vessel and lung
    hu += rng.normal(0.0, CT_NOISE_HU, size=shape).astype(np.float32)
    return hu[None], (occupancy >= 0.5)


def slice_factor(size: tuple[int, int], slices: int) -> float:
    """Slice thickness over in-plane spacing of a vessel phantom.

    The slab spans about 0.75 of the in-plane size (so vessel trees stay inside it),
    with slices between 1 and 4 times as thick as the in-plane pixels.
    """
    return float(np.clip(0.75 * min(size) / slices, 1.0, 4.0))


@dataclass(frozen=True)
class _Chest:
    """A chest slab: an elliptic body and two elliptic lungs that narrow towards the slab ends.

    Points are (z, y, x) in in-plane pixel units (z = slice index * ``zf``).
    """

    shape: tuple[int, int, int]
    zf: float
    lungs: tuple[tuple[float, float, float, float], ...]  # (cy, cx, ry, rx), fractions of H, W

    @classmethod
    def sample(cls, rng: np.random.Generator, shape: tuple[int, int, int], zf: float) -> _Chest:
        lungs = []
        for side in (-1, 1):
            lungs.append((
                0.48 + rng.uniform(-0.02, 0.02),
                0.5 + side * (0.22 + rng.uniform(-0.01, 0.01)),
                0.30 * rng.uniform(0.95, 1.05),
                0.17 * rng.uniform(0.95, 1.05),
            ))
        return cls(shape, zf, tuple(lungs))

    def _lung_r2(self, lung: int, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Squared normalised radius in lung ``lung``; z, y, x normalised to (0, 1)."""
        cy, cx, ry, rx = self.lungs[lung]
        shrink = 1 - 0.15 * ((z - 0.5) * 2) ** 2
        return ((y - cy) / (ry * shrink)) ** 2 + ((x - cx) / (rx * shrink)) ** 2

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """Body and lung masks, (S, H, W) bool."""
        z, y, x = _grid(self.shape)
        body = np.broadcast_to(((y - 0.5) / 0.42) ** 2 + ((x - 0.5) / 0.47) ** 2 <= 1.0, self.shape)
        lungs = (self._lung_r2(0, z, y, x) <= 1.0) | (self._lung_r2(1, z, y, x) <= 1.0)
        return body, lungs & body

    def lung_of(self, point: np.ndarray) -> int | None:
        """Which lung a point lies in (0 or 1), or None."""
        s, h, w = self.shape
        z = (point[0] / self.zf + 0.5) / s
        if not 0.0 <= z <= 1.0:
            return None
        for lung in (0, 1):
            if self._lung_r2(lung, z, (point[1] + 0.5) / h, (point[2] + 0.5) / w) <= 1.0:
                return lung
        return None

    def random_point(self, rng: np.random.Generator, lung: int, z: float | None = None) -> np.ndarray:
        """A point inside ``lung`` (optionally at slab depth ``z``, in pixel units)."""
        s, h, w = self.shape
        cy, cx, ry, rx = self.lungs[lung]
        while True:
            zp = rng.uniform(0, (s - 1) * self.zf) if z is None else z
            p = np.array([zp, (cy + rng.uniform(-ry, ry)) * h, (cx + rng.uniform(-rx, rx)) * w])
            if self.lung_of(p) == lung:
                return p


def _vessel_trees(rng: np.random.Generator, chest: _Chest, roots: int = 6) -> np.ndarray:
    """Segments (K, 7) = start (z, y, x), end (z, y, x), radius; in-plane pixel units.

    Per lung, half the roots start at the hilum (medial side) and half enter through the
    slab's top or bottom face, as vessels from outside the slab do. Growth is steered so
    that branches stay inside their lung.
    """
    s, h, w = chest.shape
    scale = min(h, w)
    segments: list[np.ndarray] = []
    for lung, (cy, cx, ry, rx) in enumerate(chest.lungs):
        medial = 1 if cx < 0.5 else -1
        for k in range(roots):
            if k % 2 == 0:
                z0 = (s - 1) * chest.zf * (k + rng.uniform(0.3, 1.7)) / roots
                start = np.array([z0, (cy + rng.normal(0, 0.1) * ry) * h, (cx + medial * 0.8 * rx) * w])
            else:
                z0 = 0.0 if rng.random() < 0.5 else (s - 1) * chest.zf
                start = chest.random_point(rng, lung, z=z0)
            target = chest.random_point(rng, lung)
            radius = max(1.0, 0.025 * scale) * rng.uniform(0.85, 1.15)
            _grow(rng, chest, lung, segments, start, target - start, 0.15 * scale, radius, depth=0)
    return np.array(segments, dtype=np.float32).reshape(-1, 7)


def _grow(rng, chest, lung, segments, start, direction, length, radius, depth,
          max_depth=7, min_radius=0.5, tries=4):
    """Append a segment and, recursively, its children (a planar bifurcation).

    A child whose end would leave the lung is re-drawn up to ``tries`` times, then dropped.
    """
    direction = direction / (np.linalg.norm(direction) + 1e-12)
    end = start + length * direction
    segments.append(np.concatenate([start, end, [radius]]))
    child_radius = radius * rng.uniform(0.72, 0.85)  # near Murray's law, 2^(-1/3) = 0.79
    if depth >= max_depth or child_radius < min_radius:
        return
    for sign in (1, -1):
        child_len = length * rng.uniform(0.75, 0.9)
        for _ in range(tries):
            child = _turn(rng, direction, sign * np.deg2rad(rng.uniform(20, 50)))
            if chest.lung_of(end + child_len * child) == lung:
                _grow(rng, chest, lung, segments, end, child, child_len, child_radius, depth + 1,
                      max_depth, min_radius, tries)
                break


def _turn(rng: np.random.Generator, direction: np.ndarray, angle: float) -> np.ndarray:
    """``direction`` turned by ``angle`` towards a random perpendicular."""
    normal = rng.normal(size=3)
    normal -= normal.dot(direction) * direction
    normal /= np.linalg.norm(normal) + 1e-12
    return np.cos(angle) * direction + np.sin(angle) * normal


def _render_tubes(segments: np.ndarray, shape: tuple[int, int, int], zf: float) -> np.ndarray:
    """Fractional occupancy of the union of capsules: 1 inside, linear ramp over one pixel.

    A voxel whose centre is at distance d from a segment's axis gets clip(r + 0.5 - d, 0, 1),
    so occupancy >= 0.5 exactly where d <= r. Segment z is in pixels (slice index * zf).
    """
    occupancy = np.zeros(shape, dtype=np.float32)
    scale = np.array([zf, 1.0, 1.0])
    upper = np.array(shape) - 1
    for seg in segments:
        p0, p1, r = seg[:3], seg[3:6], float(seg[6])
        lo = np.floor((np.minimum(p0, p1) - r - 1) / scale)
        hi = np.ceil((np.maximum(p0, p1) + r + 1) / scale)
        if np.any(hi < 0) or np.any(lo > upper):
            continue
        lo, hi = np.clip(lo, 0, upper).astype(int), np.clip(hi, 0, upper).astype(int)
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        zz, yy, xx = np.ogrid[box]
        v = p1 - p0
        rel = (zz * zf - p0[0], yy - p0[1], xx - p0[2])
        t = np.clip((rel[0] * v[0] + rel[1] * v[1] + rel[2] * v[2]) / max(v.dot(v), 1e-12), 0, 1)
        dist = np.sqrt(sum((rel[i] - t * v[i]) ** 2 for i in range(3)))
        occupancy[box] = np.maximum(occupancy[box], np.clip(r + 0.5 - dist, 0, 1))
    return occupancy


# ----------------------------------------------------------------------------- tumours

# Relative intensity per modality (t1, t1ce, t2, flair) of each tissue.
_MR_TISSUE = {
    "white": (1.00, 1.00, 0.70, 0.80),
    "grey": (0.80, 0.82, 0.90, 0.95),
    "csf": (0.30, 0.30, 1.60, 0.25),
    "edema": (0.75, 0.80, 1.50, 1.70),  # label 1
    "non-enhancing": (0.55, 0.55, 1.80, 1.20),  # label 2
    "enhancing": (0.85, 1.70, 1.20, 1.30),  # label 3
}
_MR_SCALE = 500.0


def _tumours(rng: np.random.Generator, size: tuple[int, int], slices: int):
    """MR-like brain with a tumour: image (4, S, H, W), label (S, H, W) in {0, 1, 2, 3}."""
    shape = (slices, *size)
    z, y, x = _grid(shape)
    brain_centre = np.array([0.5, 0.5, 0.5]) + rng.uniform(-0.02, 0.02, size=3)
    brain_radii = np.array([0.47, 0.42, 0.36]) * rng.uniform(0.95, 1.05, size=3)
    brain_r = _ellipsoid_radius(z, y, x, brain_centre, brain_radii)
    brain = brain_r * (1 + 0.04 * _smooth_field(rng, shape, max_freq=3)) <= 1.0
    label = _tumour_label(rng, shape, brain_centre, brain_radii) * brain
    tissue = np.where(brain_r > 0.75, 1, 0)  # 1 grey (outer shell), 0 white
    tissue[_ventricles(z, y, x, brain_centre, brain_radii)] = 2
    tissue[label > 0] = 2 + label[label > 0]  # 3 edema, 4 non-enhancing, 5 enhancing
    table = np.array([_MR_TISSUE[k] for k in ("white", "grey", "csf", "edema", "non-enhancing", "enhancing")])
    channels = []
    for c in range(4):
        value = table[tissue, c] * _MR_SCALE
        value *= 1 + 0.15 * _smooth_field(rng, shape, waves=4, max_freq=1.0)  # bias field
        value *= 1 + 0.04 * _smooth_field(rng, shape, max_freq=6.0)  # texture
        value += rng.normal(0, 0.03 * _MR_SCALE, size=shape)
        channels.append(np.where(brain, np.clip(value, 1, None), 0))
    return np.stack(channels).astype(np.float32), label.astype(np.uint8)


def _tumour_label(rng, shape, brain_centre, brain_radii) -> np.ndarray:
    """Nested irregular blobs: edema (1) around an enhancing rim (3) around a core (2)."""
    z, y, x = _grid(shape)
    offset = rng.uniform(-0.35, 0.35, size=3) * brain_radii * np.array([0.4, 1, 1])
    centre = brain_centre + offset
    radii = np.array([0.28, 0.16, 0.16]) * rng.uniform(0.8, 1.2, size=3)
    r = _ellipsoid_radius(z, y, x, centre, radii)
    label = np.zeros(shape, dtype=np.uint8)
    inside = np.ones(shape, dtype=bool)
    for value, extent, wobble in ((1, 1.0, 0.3), (3, 0.6, 0.25), (2, 0.35, 0.25)):
        factor = np.clip(1 + wobble * _smooth_field(rng, shape, max_freq=3.0), 0.5, 1.5)
        inside &= r < extent * factor  # each sub-region lies inside the previous one
        label[inside] = value
    return label


def _brain_slice_factor(size: tuple[int, int], slices: int) -> float:
    """Slice thickness over pixel spacing such that the slab is 0.6 of the in-plane field."""
    return 0.6 * max(size) / slices


def _ventricles(z, y, x, centre, radii) -> np.ndarray:
    """Two small ellipsoids either side of the midline (CSF)."""
    mask = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=bool)
    for side in (-1, 1):
        c = centre + np.array([0.0, -0.05, side * 0.07])
        mask |= _ellipsoid_radius(z, y, x, c, radii * np.array([0.35, 0.35, 0.12])) < 1
    return mask


# ----------------------------------------------------------------------------- organs3d

# Relative MR intensity of each tissue; scaled by _MR_SCALE and stored as int16.
_ORGAN_TISSUE = {
    "outside": 0.0, "body": 0.55, "liver": 0.42, "spine": 0.18,
    "cortex": 0.80, "medulla": 0.58, "pelvis": 1.35,  # labels 1, 2, 3
}


def _organs(rng: np.random.Generator, size: tuple[int, int], slices: int):
    """MR-like abdomen with two nested-ellipsoid kidneys: image (1, S, H, W), label (S, H, W) in 0..3."""
    shape = (slices, *size)
    z, y, x = _grid(shape)
    body = ((y - 0.5) / 0.40) ** 2 + ((x - 0.5) / 0.46) ** 2 * (1 + 0.03 * _smooth_field(rng, shape, max_freq=2)) <= 1
    tissue = np.where(body, 1, 0)  # indices into _ORGAN_TISSUE's order
    liver_centre = np.array([0.45, 0.40, 0.32]) + rng.uniform(-0.03, 0.03, size=3)
    liver = _ellipsoid_radius(z, y, x, liver_centre, np.array([0.30, 0.17, 0.20]) * rng.uniform(0.9, 1.1, 3)) < 1
    tissue[liver & body] = 2
    tissue[np.broadcast_to(((y - 0.72) / 0.06) ** 2 + ((x - 0.5) / 0.06) ** 2 <= 1, shape)] = 3  # spine
    label = np.zeros(shape, dtype=np.uint8)
    for side in (-1, 1):
        label = np.maximum(label, _kidney(rng, shape, side))
    tissue[label > 0] = 3 + label[label > 0]
    table = np.array(list(_ORGAN_TISSUE.values()), dtype=np.float32)
    value = np.zeros(shape, dtype=np.float32)
    for index in range(1, len(table)):  # a smooth intensity field per tissue (its texture)
        mask = tissue == index
        value[mask] = table[index] * (1 + 0.06 * _smooth_field(rng, shape, waves=6, max_freq=3.0)[mask])
    value *= 1 + 0.2 * _smooth_field(rng, shape, waves=4, max_freq=0.8)  # coil bias field
    value = (value + rng.normal(0, 0.03, size=shape)) * _MR_SCALE
    return np.clip(value, 0, None)[None].astype(np.float32), label


def _kidney(rng: np.random.Generator, shape: tuple[int, int, int], side: int) -> np.ndarray:
    """One kidney: cortex (1) around medulla (2) around the pelvis (3), nested wobbly ellipsoids.

    The pelvis sits towards the hilum (the midline side), as in a real kidney.
    """
    z, y, x = _grid(shape)
    centre = np.array([0.5, 0.62, 0.5 + side * 0.21]) + rng.uniform(-0.03, 0.03, size=3)
    radii = np.array([0.24, 0.12, 0.10]) * rng.uniform(0.9, 1.1, size=3)
    label = np.zeros(shape, dtype=np.uint8)
    inside = np.ones(shape, dtype=bool)
    for value, extent, shift in ((1, 1.0, 0.0), (2, 0.72, 0.0), (3, 0.42, 0.25)):
        hilum = centre - np.array([0.0, 0.0, side * shift * radii[2]])
        r = _ellipsoid_radius(z, y, x, hilum, radii * extent)
        factor = np.clip(1 + 0.08 * _smooth_field(rng, shape, max_freq=3.0), 0.8, 1.2)
        inside &= r < factor  # each region lies inside the previous one
        label[inside] = value
    return label


def _organs_slice_factor(size: tuple[int, int], slices: int) -> float:
    """Slice thickness over pixel spacing such that the volume is as deep as it is wide."""
    return max(size) / slices


def _phantom_kinds() -> dict[str, PhantomKind]:
    return {
        "vessels": PhantomKind(
            name="vessels",
            channel_names=("CT",),
            labels={"background": 0, "vessel": 1},
            image_dtype=np.int16,
            field_of_view_mm=300.0,
            slice_factor=slice_factor,
            generate=_vessels,
            description="synthetic CT lung slab with branching vessel trees",
        ),
        "tumours": PhantomKind(
            name="tumours",
            channel_names=("t1", "t1ce", "t2", "flair"),
            labels={"background": 0, "edema": 1, "non-enhancing tumour": 2, "enhancing tumour": 3},
            image_dtype=np.int16,
            field_of_view_mm=240.0,
            slice_factor=_brain_slice_factor,
            generate=_tumours,
            description="synthetic MR brain with a tumour (MSD BrainTumour labels)",
        ),
        "organs3d": PhantomKind(
            name="organs3d",
            channel_names=("MR",),
            labels={"background": 0, "cortex": 1, "medulla": 2, "pelvis": 3},
            image_dtype=np.int16,
            field_of_view_mm=192.0,
            slice_factor=_organs_slice_factor,
            generate=_organs,
            description="synthetic 3D MR abdomen with two kidneys of three nested classes",
            default_cases=12,
            default_slices=48,
        ),
    }


# ----------------------------------------------------------------------------- HDF5 benchmark layouts


def la_phantom(rng: np.random.Generator, size: tuple[int, int], slices: int) -> tuple[np.ndarray, np.ndarray]:
    """An LA-like case stored as UA-MT does: image float32 and label uint8, both (X, Y, Z).

    An atrium-like blob with a wobbly wall and four vessel-like tubes leaving it (label 1), in
    a tissue background with a smooth bias field and noise; intensities z-scored.
    """
    x, y = (int(n + rng.integers(-n // 8, n // 8 + 1)) for n in size)  # cropped around the atrium
    shape = (slices, x, y)  # (S, H, W) while drawing
    z_, y_, x_ = _grid(shape)
    centre = np.array([0.5, 0.5, 0.5]) + rng.uniform(-0.05, 0.05, size=3)
    radii = np.array([0.3, 0.25, 0.25]) * rng.uniform(0.9, 1.1, size=3)
    blob = _ellipsoid_radius(z_, y_, x_, centre, radii) * (1 + 0.08 * _smooth_field(rng, shape, max_freq=3)) < 1
    tubes = np.zeros(shape, dtype=bool)
    for _ in range(4):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        end = np.clip(centre + 0.45 * direction, 0.02, 0.98)
        t = np.clip(((z_ - centre[0]) * (end[0] - centre[0]) + (y_ - centre[1]) * (end[1] - centre[1])
                     + (x_ - centre[2]) * (end[2] - centre[2])) / max(float(np.sum((end - centre) ** 2)), 1e-6), 0, 1)
        dist = np.sqrt((z_ - centre[0] - t * (end[0] - centre[0])) ** 2 + (y_ - centre[1] - t * (end[1] - centre[1])) ** 2
                       + (x_ - centre[2] - t * (end[2] - centre[2])) ** 2)
        tubes |= dist < 0.04 * rng.uniform(0.8, 1.2)
    label = blob | tubes
    image = np.where(label, 2.0, 1.0) * (1 + 0.1 * _smooth_field(rng, shape, waves=4, max_freq=1.0))
    image = image + rng.normal(0.0, 0.15, size=shape)
    image = (image - image.mean()) / image.std()
    return np.moveaxis(image, 0, 2).astype(np.float32), np.moveaxis(label, 0, 2).astype(np.uint8)


def acdc_phantom(rng: np.random.Generator, size: tuple[int, int], slices: int) -> tuple[np.ndarray, np.ndarray]:
    """An ACDC-like volume stored as SSL4MIS does: image float32 in [0, 1] and label uint8, (Z, Y, X).

    A short-axis heart: the LV cavity (3) inside the myocardium ring (2), the RV cavity (1)
    beside it; both ventricles taper towards the apex (the last slices).
    """
    shape = (slices, *size)
    z_, y_, x_ = _grid(shape)
    taper = np.clip(1.1 - 0.6 * z_, 0.2, 1.0)  # the heart narrows towards the apex
    cy, cx = 0.5 + rng.uniform(-0.04, 0.04, size=2)
    r_lv = 0.14 * rng.uniform(0.9, 1.1) * taper
    wobble = 1 + 0.05 * _smooth_field(rng, shape, max_freq=2.5)
    r = np.sqrt((y_ - cy) ** 2 + (x_ - cx) ** 2) * wobble
    label = np.zeros(shape, dtype=np.uint8)
    r_rv = np.sqrt(((y_ - cy) / 1.3) ** 2 + (x_ - (cx - 0.22)) ** 2) * wobble
    label[(r_rv < 0.13 * taper) & (r >= r_lv * 1.45)] = 1
    label[(r >= r_lv) & (r < r_lv * 1.45)] = 2
    label[r < r_lv] = 3
    tissue = np.array([0.3, 0.8, 0.45, 0.85], dtype=np.float32)[label]
    image = tissue * (1 + 0.1 * _smooth_field(rng, shape, waves=4, max_freq=1.0)) + rng.normal(0, 0.04, size=shape)
    image = (image - image.min()) / (image.max() - image.min())
    return image.astype(np.float32), label


def _write_la(root: Path, cases: int, size: tuple[int, int], slices: int, seed: int) -> None:
    from mismatch.data.h5layouts import LA_LISTS, write_la_case, write_list

    ids = [f"la_{i:03d}" for i in range(cases)]
    for i, case in enumerate(ids):
        write_la_case(root, case, *la_phantom(np.random.default_rng(np.random.SeedSequence([seed, i])), size, slices))
    test = max(1, cases // 5)
    write_list(root / LA_LISTS[0], ids[:-test])
    write_list(root / LA_LISTS[1], ids[-test:])


def _write_acdc(root: Path, patients: int, size: tuple[int, int], slices: int, seed: int) -> None:
    from mismatch.data.h5layouts import ACDC_SLICE_LIST, write_acdc_case, write_list

    test, val = max(1, patients // 5), max(1, patients // 10)
    groups: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    train_slices: list[str] = []
    for i in range(patients):
        role = "test" if i >= patients - test else "val" if i >= patients - test - val else "train"
        for f, frame in enumerate(("frame01", "frame10")):
            case = f"patient{i + 1:03d}_{frame}"
            rng = np.random.default_rng(np.random.SeedSequence([seed, i, f]))
            image, label = acdc_phantom(rng, size, slices)
            write_acdc_case(root, case, image, label)
            groups[role].append(case)
            if role == "train":
                train_slices += [f"{case}_slice_{k}" for k in range(slices)]
    for role, ids in groups.items():
        write_list(root / f"{role}.list", ids)
    write_list(root / ACDC_SLICE_LIST, train_slices)


#: HDF5 phantom kinds: the writer (root, cases, size, slices, seed) and the least ``cases``.
H5_PHANTOMS: dict[str, tuple[Callable[[Path, int, tuple[int, int], int, int], None], int]] = {
    "la2018-h5": (_write_la, 2),
    "acdc-h5": (_write_acdc, 3),
}
