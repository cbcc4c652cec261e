"""Reading and writing one volume file, whatever its format, and assembling a case from files.

Formats, chosen by the file name's ending:

- NIfTI (``.nii.gz``, ``.nii``) through nibabel. Stored axes (H, W, S[, C]): the last
  spatial axis is the slice axis.
- MetaImage (``.mhd`` header + ``.raw``/``.zraw`` data file, or ``.mha``) through
  SimpleITK, an optional dependency (``pip install 'mismatch[carve]'``). SimpleITK gives
  arrays (z, y, x): slices along z, rows y, columns x.
- HDF5 (``.h5``, ``.hdf5``) through h5py: one file holds a case's image (dataset ``image``)
  and label (dataset ``label``), as the UA-MT / SSL4MIS distributions of the LA and ACDC
  benchmarks do. The file stores neither axis names nor spacing: the layout says both
  (:class:`H5Geometry`).

Every reader returns a :class:`Volume` whose ``data`` is (C, S, H, W) (C = 1 for a 3D file),
whose ``affine`` maps voxel indices (in the file's axis order) to millimetres and whose
``spacing`` is the voxel size in millimetres along (S, H, W), from that affine. A missing, unreadable, corrupt or
truncated file raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mismatch.data.errors import FileProblemError

NIFTI_ENDINGS = (".nii.gz", ".nii")
METAIMAGE_ENDINGS = (".mhd", ".mha")
SIMPLEITK_HINT = "reading MetaImage (.mhd/.mha) files needs SimpleITK: pip install 'mismatch[carve]'"
H5_ENDINGS = (".h5", ".hdf5")
H5_IMAGE = "image"
H5_LABEL = "label"

# MetaImage element types -> bytes per element (MET_LONG is 4 bytes in MetaIO).
_MET_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


Spacing = tuple[float, float, float]
"""Voxel size in millimetres along the (S, H, W) axes of the arrays."""

# Columns of a file's affine that step along S, H and W: NIfTI stores (H, W, S),
# MetaImage's index order is (x, y, z) = (W, H, S).
_NIFTI_SHW_COLUMNS = (2, 0, 1)
_METAIMAGE_SHW_COLUMNS = (2, 1, 0)


class FileUnreadableError(FileProblemError):
    """The whole file is missing or cannot be opened (not one dataset or value in it)."""


@dataclass(frozen=True)
class H5Geometry:
    """What an HDF5 case file does not store: the order of its array axes and the voxel size.

    ``axes`` names the stored axes with the letters S (slice), H and W: ``"HWS"`` for a
    volume stored (X, Y, Z) whose last axis is the slice axis (LA), ``"SHW"`` for (Z, Y, X)
    (ACDC). ``spacing`` is in mm along (S, H, W).
    """

    axes: str = "SHW"
    spacing: Spacing = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if sorted(self.axes) != ["H", "S", "W"]:
            raise ValueError(f"axes must order the letters S, H and W, got {self.axes!r}")


@dataclass
class Volume:
    """One file's voxels: ``data`` (C, S, H, W), ``affine`` 4x4, ``file_shape`` as stored on disk,
    ``spacing`` the voxel size in mm along (S, H, W)."""

    data: np.ndarray
    affine: np.ndarray
    file_shape: tuple[int, ...]
    path: Path
    spacing: Spacing


@dataclass
class Case:
    """One case as arrays: ``image`` float32 (C, S, H, W), ``label`` integer (S, H, W),
    ``spacing`` the voxel size in mm along (S, H, W) from the image header."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    channel_names: tuple[str, ...]
    spacing: Spacing


@dataclass(frozen=True)
class CaseGeometry:
    """A case's voxel grid: ``shape`` (S, H, W) and ``spacing`` in mm along the same axes."""

    shape: tuple[int, int, int]
    spacing: Spacing


def affine_spacing(affine: np.ndarray, columns: Sequence[int]) -> Spacing:
    """Voxel size in mm along the array axes whose affine columns are ``columns``: the
    length of each column (rotations and flips in the affine do not change it)."""
    lengths = np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)
    return tuple(float(lengths[c]) for c in columns)  # type: ignore[return-value]


def file_format(path: Path) -> str:
    """``"nifti"``, ``"metaimage"`` or ``"hdf5"`` from the file name; anything else is a DataError."""
    name = path.name.lower()
    if name.endswith(NIFTI_ENDINGS):
        return "nifti"
    if name.endswith(METAIMAGE_ENDINGS):
        return "metaimage"
    if name.endswith(H5_ENDINGS):
        return "hdf5"
    raise FileProblemError(path, f"unknown volume format (expected one of "
                                 f"{NIFTI_ENDINGS + METAIMAGE_ENDINGS + H5_ENDINGS})")


def read_volume(path: Path, what: str = "volume", h5: H5Geometry | None = None, dataset: str = H5_IMAGE) -> Volume:
    """Read ``path`` as (C, S, H, W); ``what`` ("label", "image channel", ...) goes into errors.

    ``h5`` and ``dataset`` apply to HDF5 files only: the geometry the file does not store
    (default: (S, H, W) axes, 1 mm voxels) and the dataset to read.
    """
    if not path.is_file():
        raise FileUnreadableError(path, f"missing {what} file")
    fmt = file_format(path)
    if fmt == "nifti":
        return _read_nifti(path, what)
    if fmt == "hdf5":
        return _read_h5(path, what, dataset, h5 or H5Geometry())
    return _read_metaimage(path, what)


def data_files(path: Path) -> list[Path]:
    """The files whose bytes make up the volume at ``path``: itself, plus a MetaImage data file."""
    if file_format(path) != "metaimage" or not path.is_file():
        return [path]
    data_file = metaimage_data_file(path, read_metaimage_header(path))
    return [path] if data_file is None else [path, data_file]


# ----------------------------------------------------------------------------- NIfTI


def _read_nifti(path: Path, what: str) -> Volume:
    import nibabel as nib

    try:
        img = _load_nifti(path, what)
        data = np.asanyarray(img.dataobj)
    except FileProblemError:
        raise
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError,
            nib.spatialimages.HeaderDataError, nib.wrapstruct.WrapStructError) as err:
        raise FileProblemError(path, f"cannot read {what} file (corrupt or truncated?): {err}") from None
    file_shape = tuple(int(n) for n in data.shape)
    while data.ndim > 3 and data.shape[-1] == 1:  # trailing axes of length 1 (e.g. time) dropped
        data = data[..., 0]
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise FileProblemError(path, f"expected a 3D volume (or 4D with channels last), got shape {file_shape}")
    affine = np.asarray(img.affine, np.float64)
    data = np.moveaxis(data, (3, 2), (0, 1))  # (C, S, H, W)
    return Volume(data, affine, file_shape, path, affine_spacing(affine, _NIFTI_SHW_COLUMNS))


def _load_nifti(path: Path, what: str = "volume"):
    """A NIfTI image whose data the header's shape and type fit in the file, checked before any
    voxel array is allocated (a forged 92-byte header claiming 30000^3 voxels is an error, not
    a MemoryError). A ``.gz`` file is stream-decompressed up to the size its header implies and
    then read to its end, so its CRC and length are verified (nibabel alone reads only as many
    bytes as the header asks for and can return silently corrupted voxels)."""
    import nibabel as nib

    if not path.name.lower().endswith(".gz"):
        with path.open("rb") as handle:
            header = _nifti_header(path, handle.read(_NIFTI2_HEADER_BYTES), what)
        _check_nifti_size(path, header, path.stat().st_size, what, "")
        return nib.load(path)
    with gzip.open(path, "rb") as stream:  # BadGzipFile / EOFError / zlib.error on damage
        body = bytearray(stream.read(_NIFTI2_HEADER_BYTES))
        header = _nifti_header(path, bytes(body), what)
        need = nifti_data_end(header)
        while len(body) < need:
            chunk = stream.read(min(need - len(body), _CHUNK))
            if not chunk:
                break
            body += chunk
        _check_nifti_size(path, header, len(body), what, " (decompressed)")
        while stream.read(_CHUNK):  # the rest, unused, is read only to verify the CRC and length
            pass
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    return image_class.from_bytes(bytes(body))


_NIFTI1_HEADER_BYTES = 348
_NIFTI2_HEADER_BYTES = 540
_CHUNK = 1 << 24


def _nifti_header(path: Path, head: bytes, what: str):
    """The NIfTI-1 or NIfTI-2 header at the start of ``head`` (its first 540 bytes or fewer)."""
    import nibabel as nib

    sizes = (int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big"))
    klass, size = (nib.Nifti2Header, 540) if _NIFTI2_HEADER_BYTES in sizes else (nib.Nifti1Header, 348)
    if len(head) < size:
        raise FileProblemError(path, f"cannot read {what} file: {len(head)} bytes, too short for a NIfTI header")
    try:
        return klass(head[:size], check=True)
    except (ValueError, nib.spatialimages.HeaderDataError, nib.wrapstruct.WrapStructError) as err:
        raise FileProblemError(path, f"cannot read {what} file (not a NIfTI header?): {err}") from None


def nifti_data_end(header) -> int:
    """Bytes a NIfTI file needs according to its header: the data offset plus shape x type size
    (exact Python integers, so a forged shape cannot overflow)."""
    shape = header.get_data_shape()
    offset = max(int(header.get_data_offset()), 0)
    return offset + math.prod(int(n) for n in shape) * header.get_data_dtype().itemsize


def _check_nifti_size(path: Path, header, actual: int, what: str, how: str) -> None:
    need = nifti_data_end(header)
    if actual < need:
        shape = "x".join(str(int(n)) for n in header.get_data_shape())
        raise FileProblemError(path, f"truncated {what} file or forged header: the header claims {shape} "
                                     f"{header.get_data_dtype()} voxels ({need} bytes), the file holds only "
                                     f"{actual} bytes{how}")


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray, dtype: type | None = None) -> Path:
    """Write ``volume`` (S, H, W) as NIfTI with stored axes (H, W, S)."""
    import nibabel as nib

    array = np.ascontiguousarray(np.moveaxis(volume, 0, 2).astype(dtype or volume.dtype))  # (H, W, S)
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    img.set_data_dtype(array.dtype)
    nib.save(img, path)
    return path


# ----------------------------------------------------------------------------- MetaImage


def read_metaimage_header(path: Path) -> dict[str, str]:
    """``key = value`` pairs of a MetaImage header, up to ``ElementDataFile`` (its last key)."""
    header: dict[str, str] = {}
    try:
        with path.open("rb") as handle:
            for _ in range(200):
                line = handle.readline()
                if not line:
                    break
                key, sep, value = line.decode("latin-1").partition("=")
                if not sep:
                    raise FileProblemError(path, f"not a MetaImage header (line {line[:40]!r})")
                header[key.strip()] = value.strip()
                if key.strip() == "ElementDataFile":
                    break
    except OSError as err:
        raise FileProblemError(path, f"cannot read: {err}") from None
    if "ElementDataFile" not in header or "DimSize" not in header:
        raise FileProblemError(path, "not a MetaImage header (no DimSize / ElementDataFile)")
    return header


def metaimage_data_file(path: Path, header: dict[str, str]) -> Path | None:
    """The data file a header names (None when the data follow the header, ``LOCAL``, or are
    spread over several files, ``LIST`` / a ``%d`` pattern: SimpleITK resolves those)."""
    name = header["ElementDataFile"]
    if name.upper() in ("LOCAL", "LIST") or "%" in name:
        return None
    return path.parent / name


def _check_metaimage_data(path: Path, header: dict[str, str], what: str) -> None:
    """A missing or short data file gets a clear message (SimpleITK's says 'No such file')."""
    data_file = metaimage_data_file(path, header)
    if data_file is None:
        return
    if not data_file.is_file():
        raise FileProblemError(data_file, f"missing data file of {what} file {path.name}")
    if header.get("CompressedData", "False").lower() == "true":
        return
    try:
        dims = [int(v) for v in header["DimSize"].split()]
        per = _MET_BYTES[header.get("ElementType", "")] * int(header.get("ElementNumberOfChannels", "1"))
        offset = max(int(header.get("HeaderSize", "0")), 0)
    except (KeyError, ValueError):
        return  # unusual header: let SimpleITK judge it
    expected = offset + per * int(np.prod(dims))
    actual = data_file.stat().st_size
    if actual < expected:
        raise FileProblemError(data_file, f"truncated {what} data file: {actual} bytes, header {path.name} needs {expected}")


def _read_metaimage(path: Path, what: str) -> Volume:
    try:
        import SimpleITK as sitk
    except ImportError:
        raise FileProblemError(path, SIMPLEITK_HINT) from None
    header = read_metaimage_header(path) if path.name.lower().endswith(".mhd") else {}
    if header:
        _check_metaimage_data(path, header, what)
    try:
        img = sitk.ReadImage(str(path))
        data = sitk.GetArrayFromImage(img)  # (z, y, x[, c])
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1]
        raise FileProblemError(path, f"cannot read {what} file (corrupt or truncated?): {reason}") from None
    file_shape = tuple(int(n) for n in img.GetSize()) + ((img.GetNumberOfComponentsPerPixel(),) if data.ndim == 4 else ())
    if img.GetDimension() != 3:
        raise FileProblemError(path, f"expected a 3D volume, got {img.GetDimension()}D of size {file_shape}")
    data = data[None] if data.ndim == 3 else np.moveaxis(data, 3, 0)  # (C, S, H, W)
    affine = _metaimage_affine(img)
    return Volume(data, affine, file_shape, path, affine_spacing(affine, _METAIMAGE_SHW_COLUMNS))


def _metaimage_affine(img) -> np.ndarray:
    """Voxel (x, y, z) index -> physical point (ITK's LPS millimetres)."""
    direction = np.asarray(img.GetDirection(), np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = img.GetOrigin()
    return affine


def write_metaimage(
    path: Path, volume: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0), compress: bool = False,
) -> list[Path]:
    """Write ``volume`` (S, H, W) as ``path`` (``.mhd``) + a ``.raw`` (or ``.zraw``) data file.

    ``spacing`` and ``origin`` are in (x, y, z) = (W, H, S) order, as MetaImage stores them.
    Returns the header and data file paths.
    """
    try:
        import SimpleITK as sitk
    except ImportError:
        raise FileProblemError(path, "writing MetaImage files needs SimpleITK: pip install 'mismatch[carve]'") from None
    img = sitk.GetImageFromArray(np.ascontiguousarray(volume))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    sitk.WriteImage(img, str(path), compress)
    return data_files(path)


# ----------------------------------------------------------------------------- HDF5


def _read_h5(path: Path, what: str, dataset: str, geometry: H5Geometry) -> Volume:
    """One 3D dataset of an HDF5 file as (1, S, H, W), its axes reordered by ``geometry``."""
    try:
        import h5py
    except ImportError:
        raise FileProblemError(path, "reading HDF5 (.h5) files needs h5py: pip install h5py") from None
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise FileUnreadableError(path, f"cannot read {what} file (not HDF5, corrupt or truncated?): {err}") from None
    with handle:
        node = handle.get(dataset)
        if not isinstance(node, h5py.Dataset):
            raise FileProblemError(path, f"no dataset {dataset!r} ({what}) in the file; it holds {sorted(handle)}")
        file_shape = tuple(int(n) for n in node.shape)
        if len(file_shape) != 3:
            raise FileProblemError(path, f"dataset {dataset!r} ({what}) must be 3D, got shape {file_shape}")
        try:
            data = node[()]
        except (OSError, ValueError, TypeError) as err:
            raise FileProblemError(path, f"cannot read dataset {dataset!r} ({what}; corrupt?): {err}") from None
    if not np.issubdtype(data.dtype, np.number):
        raise FileProblemError(path, f"dataset {dataset!r} ({what}) is not numeric (dtype {data.dtype})")
    order = [geometry.axes.index(axis) for axis in "SHW"]
    by_axis = dict(zip("SHW", geometry.spacing))
    affine = np.diag([*(by_axis[axis] for axis in geometry.axes), 1.0])
    return Volume(np.transpose(data, order)[None], affine, file_shape, path, affine_spacing(affine, order))


# ----------------------------------------------------------------------------- labels and cases


def label_values(label: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array, sorted (bincount when they are small: fast)."""
    if label.size == 0:
        return np.zeros(0, np.int64)
    flat = label.reshape(-1)
    low, high = int(flat.min()), int(flat.max())
    if 0 <= low and high < 1 << 16:
        return np.flatnonzero(np.bincount(flat, minlength=high + 1))
    return np.unique(flat).astype(np.int64)


def label_value_problems(label: np.ndarray, allowed: Sequence[int] | None = None) -> list[str]:
    """What is wrong with a label array's values: non-integers, negatives, values not ``allowed``."""
    if not np.issubdtype(label.dtype, np.integer):
        finite = np.isfinite(label)
        if not finite.all():
            return [f"label has {int(finite.size - np.count_nonzero(finite))} NaN or infinite values"]
        rounded = np.rint(label)
        if not np.array_equal(rounded, label):
            return [f"label values must be integers, found e.g. {float(label[rounded != label][0])!r}"]
        label = rounded.astype(np.int64)
    values = label_values(label)
    problems = []
    if values.size and values[0] < 0:
        problems.append(f"label values must be >= 0, found {int(values[0])}")
    if allowed is not None:
        unexpected = sorted(set(values.tolist()) - {int(a) for a in allowed})
        if unexpected:
            problems.append(f"unexpected label values {unexpected} (expected a subset of {sorted(allowed)})")
    return problems


def as_label(label: np.ndarray, path: Path, allowed: Sequence[int] | None = None) -> np.ndarray:
    """Integer labels (S, H, W): uint8 when every value fits, int32 otherwise; bad values raise."""
    problems = label_value_problems(label, allowed)
    if problems:
        raise FileProblemError(path, problems[0])
    high = int(label.max()) if label.size else 0
    return np.ascontiguousarray(label, dtype=np.uint8 if high <= 255 else np.int32)


def non_finite_count(image: np.ndarray) -> int:
    """How many NaN or infinite values ``image`` holds (0 for integer arrays)."""
    if np.issubdtype(image.dtype, np.integer):
        return 0
    return int(image.size - np.count_nonzero(np.isfinite(image)))


def same_affine(a: np.ndarray, b: np.ndarray) -> bool:
    """Affines equal up to float noise in headers (1e-4 mm, 1e-5 relative)."""
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-5, atol=1e-4))


@dataclass(frozen=True)
class CaseSources:
    """The files of one case: ``images`` hold the channels in order (a 3D file is one
    channel, a 4D file several), ``label`` the integer label volume."""

    images: tuple[Path, ...]
    label: Path
    h5: H5Geometry | None = None


Problem = tuple[Path, str]


def read_case(
    case_id: str,
    sources: CaseSources,
    channel_names: Sequence[str],
    allowed_labels: Sequence[int] | None = None,
) -> tuple[list[Problem], Case | None]:
    """Read and check every file of a case; returns ALL problems found and the case if none.

    Checked: each file exists and reads (corrupt / truncated files are problems, not
    crashes); every channel and the label share the grid (shape) and the affine; the
    channel count matches ``channel_names``; intensities are finite; label values are
    non-negative integers within ``allowed_labels``.
    """
    problems: list[Problem] = []
    channels: list[Volume] = []
    unreadable: set[Path] = set()
    for path in sources.images:
        problems += _read_into(path, "image channel", channels, unreadable, sources.h5, H5_IMAGE)
    image = _image_problems(channels, channel_names, sources, problems)
    labels: list[Volume] = []
    if sources.label not in unreadable:  # one file holding image and label (HDF5): one problem
        problems += _read_into(sources.label, "label", labels, unreadable, sources.h5, H5_LABEL)
    label = None
    if labels:
        label = _label_problems(labels[0], channels[0] if channels else None, allowed_labels, problems)
    if problems or image is None or label is None:
        return problems, None
    return [], Case(case_id, image, label, channels[0].affine, tuple(channel_names), channels[0].spacing)


def _read_into(
    path: Path, what: str, out: list[Volume], unreadable: set[Path], h5: H5Geometry | None, dataset: str
) -> list[Problem]:
    try:
        out.append(read_volume(path, what, h5, dataset))
    except FileProblemError as err:
        if isinstance(err, FileUnreadableError):
            unreadable.add(path)
        return [(Path(err.path), err.problem)]
    return []


def _image_problems(
    channels: list[Volume], channel_names: Sequence[str], sources: CaseSources, problems: list[Problem]
) -> np.ndarray | None:
    """Check the channels against the first one; the stacked image (C, S, H, W) float32 or None."""
    if not channels:
        return None
    first = channels[0]
    ok = True
    for vol in channels[1:]:
        if vol.data.shape[1:] != first.data.shape[1:]:
            problems.append((vol.path, f"shape {vol.file_shape} differs from {first.path.name} {first.file_shape} "
                                       "(channels of one case must share a grid)"))
            ok = False
        elif not same_affine(vol.affine, first.affine):
            problems.append((vol.path, f"affine differs from {first.path.name}"))
            ok = False
    for vol in channels:
        bad = non_finite_count(vol.data)
        if bad:
            problems.append((vol.path, f"{bad} NaN or infinite intensities"))
            ok = False
    count = sum(v.data.shape[0] for v in channels)
    if ok and len(channels) == len(sources.images) and count != len(channel_names):
        problems.append((first.path, f"{count} channels, expected {len(channel_names)} ({', '.join(channel_names)})"))
        ok = False
    if not ok or len(channels) != len(sources.images):
        return None
    return np.ascontiguousarray(np.concatenate([v.data for v in channels]).astype(np.float32, copy=False))


def _label_problems(
    vol: Volume, first: Volume | None, allowed: Sequence[int] | None, problems: list[Problem]
) -> np.ndarray | None:
    if vol.data.shape[0] != 1:
        problems.append((vol.path, f"a label must be one 3D volume, got shape {vol.file_shape}"))
        return None
    found = []
    if first is not None and vol.data.shape[1:] != first.data.shape[1:]:
        found.append(f"label shape {vol.file_shape} differs from image shape {first.file_shape} ({first.path.name})")
    elif first is not None and not same_affine(vol.affine, first.affine):
        found.append(f"label affine differs from image affine ({first.path.name})")
    found += label_value_problems(vol.data[0], allowed)
    problems += [(vol.path, p) for p in found]
    if found:
        return None
    high = int(vol.data.max()) if vol.data.size else 0
    return np.ascontiguousarray(vol.data[0], dtype=np.uint8 if high <= 255 else np.int32)
