"""The CARVE14 layout: one MetaImage (``.mhd`` + ``.raw``) CT volume and one label volume per case.

Expected folder (put the fully annotated scans of the download there, keeping file names)::

    <root>/
      images/<case>.mhd     CT in Hounsfield units; the header names its data file
      images/<case>.raw     (or .zraw when compressed; .mha files, header and data in one, also work)
      labels/<case>.mhd     reference standard on the same grid: 0 background, 1 artery, 2 vein
      labels/<case>.raw

A case id is the file name without ``.mhd``/``.mha``; image and label are paired by it.
Reading needs SimpleITK (``pip install 'mismatch[carve]'``). Arrays come as SimpleITK gives
them, (z, y, x) = (S, H, W): slices are the z planes. Vessel = labels 1 and 2 merged (the
``carve`` preset's ``foreground_labels``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mismatch.data.errors import FileProblemError
from mismatch.data.layouts import Layout, register_layout
from mismatch.data.volumes import (
    METAIMAGE_ENDINGS,
    SIMPLEITK_HINT,
    CaseSources,
    Problem,
    metaimage_data_file,
    read_metaimage_header,
    write_metaimage,
)

IMAGES_DIR = "images"
LABELS_DIR = "labels"
CHANNELS = ("CT",)
LABEL_VALUES = (0, 1, 2)  # background, artery, vein
_DATA_ENDINGS = (".raw", ".zraw")


def list_cases(root: Path) -> list[str]:
    """Sorted ids of every case with an image or a label header (SimpleITK must be installed)."""
    try:
        import SimpleITK  # noqa: F401  (fail once, clearly, rather than once per file)
    except ImportError:
        raise FileProblemError(root, SIMPLEITK_HINT) from None
    cases: set[str] = set()
    for folder in (IMAGES_DIR, LABELS_DIR):
        path = Path(root) / folder
        if not path.is_dir():
            raise FileProblemError(path, f"folder not found (the carve14 layout needs {IMAGES_DIR}/ and {LABELS_DIR}/)")
        cases.update(_stem(p) for p in path.iterdir() if _is_header(p))
    return sorted(cases)


def case_sources(root: Path, case_id: str) -> CaseSources:
    """``images/<case>.mhd`` (or ``.mha``) and ``labels/<case>.mhd`` (or ``.mha``)."""
    root = Path(root)
    return CaseSources(images=(_header(root / IMAGES_DIR, case_id),), label=_header(root / LABELS_DIR, case_id))


def stray_files(root: Path, cases: Sequence[str]) -> list[Problem]:
    """``.raw``/``.zraw`` files that no header names (a header lost or renamed)."""
    problems: list[Problem] = []
    for folder in (IMAGES_DIR, LABELS_DIR):
        path = Path(root) / folder
        named = set()
        for header in (p for p in path.iterdir() if p.name.lower().endswith(".mhd") and not p.name.startswith(".")):
            try:
                data_file = metaimage_data_file(header, read_metaimage_header(header))
            except FileProblemError:
                continue  # reported with its case
            if data_file is not None:
                named.add(data_file.name)
        for data in sorted(path.iterdir()):
            if data.name.lower().endswith(_DATA_ENDINGS) and data.name not in named:
                problems.append((data, "data file without a .mhd header naming it (unpaired file)"))
    return problems


def write_case(
    root: Path, case_id: str, image: np.ndarray, label: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0), compress: bool = False,
) -> list[Path]:
    """Write one case: ``image`` (S, H, W) as int16 HU and ``label`` (S, H, W) as uint8 MetaImage.

    ``spacing`` is (x, y, z) in mm. Returns every file written (headers and data files).
    """
    root = Path(root)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (root / LABELS_DIR).mkdir(parents=True, exist_ok=True)
    hu = np.rint(image).astype(np.int16) if not np.issubdtype(image.dtype, np.integer) else image.astype(np.int16)
    files = write_metaimage(root / IMAGES_DIR / f"{case_id}.mhd", hu, spacing, compress=compress)
    return files + write_metaimage(root / LABELS_DIR / f"{case_id}.mhd", label.astype(np.uint8), spacing,
                                   compress=compress)


def _is_header(path: Path) -> bool:
    return path.name.lower().endswith(METAIMAGE_ENDINGS) and not path.name.startswith(".")


def _stem(path: Path) -> str:
    return path.name[: -len(".mhd")]


def _header(folder: Path, case_id: str) -> Path:
    mha = folder / f"{case_id}.mha"
    return mha if mha.is_file() and not (folder / f"{case_id}.mhd").is_file() else folder / f"{case_id}.mhd"


LAYOUT = register_layout(
    Layout(
        name="carve14",
        list_cases=list_cases,
        sources=case_sources,
        channel_names=lambda root: CHANNELS,
        label_values=lambda root: LABEL_VALUES,
        stray_files=stray_files,
        description="CARVE14: images/<case>.mhd + .raw (CT, HU) and labels/<case>.mhd + .raw (1 artery, 2 vein)",
    )
)
