"""The BRATS 2018 layout: one folder per case with four MR modalities and a segmentation.

Expected folder (the ``HGG`` folder of ``MICCAI_BraTS_2018_Data_Training``, unchanged)::

    <root>/
      <case>/<case>_t1.nii.gz
      <case>/<case>_t1ce.nii.gz
      <case>/<case>_t2.nii.gz
      <case>/<case>_flair.nii.gz
      <case>/<case>_seg.nii.gz     0 background, 1 necrotic / non-enhancing core, 2 edema, 4 enhancing

A case id is the folder name; ``.nii`` files are read too. Channels are stacked in the order
t1, t1ce, t2, flair. Whole tumour = labels {1, 2, 4} (the ``brats`` preset's
``foreground_labels``). Volumes are 240 x 240 x 155 (H, W, S): 155 axial slices per case.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mismatch.data.errors import DataError, FileProblemError
from mismatch.data.layouts import Layout, register_layout
from mismatch.data.volumes import CaseSources, Problem, write_nifti

MODALITIES = ("t1", "t1ce", "t2", "flair")
LABEL_SUFFIX = "seg"
LABEL_VALUES = (0, 1, 2, 4)
_ENDINGS = (".nii.gz", ".nii")


def list_cases(root: Path) -> list[str]:
    """Sorted names of the case folders under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileProblemError(root, "folder not found")
    cases = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    grades = [c for c in cases if c in ("HGG", "LGG")]
    if grades:
        raise DataError(f"{root} holds {' and '.join(grades)} folders: give the folder of the cases, "
                        f"e.g. {root / grades[0]} (the paper used HGG)")
    return cases


def case_sources(root: Path, case_id: str) -> CaseSources:
    """``<case>/<case>_<modality>.nii.gz`` for t1, t1ce, t2, flair, and ``<case>/<case>_seg.nii.gz``."""
    folder = Path(root) / case_id
    return CaseSources(
        images=tuple(_file(folder, f"{case_id}_{m}") for m in MODALITIES),
        label=_file(folder, f"{case_id}_{LABEL_SUFFIX}"),
    )


def stray_files(root: Path, cases: Sequence[str]) -> list[Problem]:
    """Volume files lying directly in ``root`` instead of in a case folder."""
    return [(p, "volume file outside a case folder (each case needs its own folder)")
            for p in sorted(Path(root).iterdir()) if p.is_file() and p.name.endswith(_ENDINGS)]


def write_case(root: Path, case_id: str, image: np.ndarray, label: np.ndarray, affine: np.ndarray) -> list[Path]:
    """Write one case: ``image`` (4, S, H, W) in the order t1, t1ce, t2, flair; ``label`` (S, H, W)."""
    folder = Path(root) / case_id
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_nifti(folder / f"{case_id}_{m}.nii.gz", image[c], affine, np.float32)
             for c, m in enumerate(MODALITIES)]
    return paths + [write_nifti(folder / f"{case_id}_{LABEL_SUFFIX}.nii.gz", label, affine, np.uint8)]


def _file(folder: Path, stem: str) -> Path:
    for ending in _ENDINGS:
        if (folder / f"{stem}{ending}").is_file():
            return folder / f"{stem}{ending}"
    return folder / f"{stem}{_ENDINGS[0]}"


LAYOUT = register_layout(
    Layout(
        name="brats2018",
        list_cases=list_cases,
        sources=case_sources,
        channel_names=lambda root: MODALITIES,
        label_values=lambda root: LABEL_VALUES,
        stray_files=stray_files,
        description="BRATS 2018: <case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz (HGG folder)",
    )
)
