"""The HDF5 distributions of the two semi-supervised benchmarks: ``la2018-h5`` and ``acdc-h5``.

``la2018-h5``: the 2018 Left Atrium (LA) data as UA-MT (Yu et al., MICCAI 2019,
``code/dataloaders/la_heart_processing.py``), SSL4MIS and most later LA papers distribute it::

    <root>/
      train.list, test.list                           case ids, one per line (UA-MT's 80 / 20)
      2018LA_Seg_Training Set/<case>/mri_norm2.h5     datasets image (float, (X, Y, Z)), label (0/1)

The volumes are stored (X, Y, Z): Z, the last axis, is the slice axis, so a case reads as
(S, H, W) = (Z, X, Y). The files store no spacing; UA-MT's preprocessing crops x and y around
the atrium and z-scores the intensities but does not resample, so the voxels keep the
challenge's 0.625 mm isotropic spacing (:data:`LA_SPACING_MM`; :func:`la2018_layout` makes a
layout with another). Cases are the folders; a folder named in no list, or a list entry
without its folder, is a problem of ``data check``.

``acdc-h5``: ACDC as SSL4MIS (Luo, ``data/ACDC``) distributes it::

    <root>/
      train_slices.list, train.list, val.list, test.list
      data/<patient>_frame<NN>.h5                     volumes: image, label (Z, Y, X), labels 0-3
      data/slices/<patient>_frame<NN>_slice_<K>.h5    training slices: image, label (Y, X)

Cases are the volumes (read (S, H, W) = (Z, Y, X)); labels 0 background, 1 RV, 2 myocardium,
3 LV. The slices repeat the training volumes, so they are not read: ``data check`` only
checks that every slice ``train_slices.list`` names exists. The files store no spacing and
ACDC's varies by patient (about 1.4-1.7 mm in plane, 5-10 mm between slices): volumes read
with 1 mm voxels, so distances are in voxels (as SSL4MIS computes HD95). A spec on acdc-h5
gives ``classes: [1, 2, 3]`` (the 4-class task, classes named RV, Myo, LV) or
``foreground_labels`` (one binary task, e.g. ``[3]``: LV).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mismatch.data.errors import FileProblemError
from mismatch.data.layouts import Layout, register_layout
from mismatch.data.splits import CaseLists
from mismatch.data.volumes import H5_IMAGE, H5_LABEL, CaseSources, H5Geometry, Problem, Spacing

LA_CASES_DIR = "2018LA_Seg_Training Set"
LA_FILE = "mri_norm2.h5"
LA_LISTS = ("train.list", "test.list")
#: The LA challenge's voxel size (0.625 mm isotropic), kept by UA-MT's preprocessing.
LA_SPACING_MM: Spacing = (0.625, 0.625, 0.625)
LA_AXES = "HWS"  # stored (X, Y, Z); Z is the slice axis

ACDC_DATA_DIR = "data"
ACDC_SLICES_DIR = "slices"
ACDC_LISTS = ("train.list", "val.list", "test.list")
ACDC_SLICE_LIST = "train_slices.list"
ACDC_CLASSES = ("RV", "Myo", "LV")
ACDC_AXES = "SHW"  # stored (Z, Y, X)


# ----------------------------------------------------------------------------- lists


def read_list(path: Path) -> list[str]:
    """The ids a ``.list`` file names, one per line (blank lines and surrounding spaces ignored)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileProblemError(path, "list file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FileProblemError(path, f"cannot read list file: {err}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def case_lists(layout: str, root: str | Path) -> dict[str, list[str]]:
    """The case lists of a dataset in ``la2018-h5`` (``train``, ``test``) or ``acdc-h5``
    (``train``, ``val``, ``test``), in file order: what a protocol uses as fixed splits
    (UA-MT tests LA on the 20 cases of ``test.list``)."""
    names = {"la2018-h5": LA_LISTS, "acdc-h5": ACDC_LISTS}.get(layout)
    if names is None:
        raise FileProblemError(Path(root), f"layout {layout!r} has no case lists (la2018-h5 and acdc-h5 do)")
    return {name.removesuffix(".list"): read_list(Path(root) / name) for name in names}


def patient_of(layout: str, case_id: str) -> str:
    """The patient a case belongs to: ACDC's ``patient001_frame01`` -> ``patient001`` (the ED
    and ES frames are one patient's); in LA each case is its own patient."""
    return case_id.split("_frame")[0] if layout == "acdc-h5" else case_id


def fixed_lists(layout: str, root: str | Path) -> CaseLists:
    """The split the lists of ``root`` fix (``protocol.split: lists``): training patients in
    ``train.list`` order (each with its cases in list order), ``val.list`` (acdc-h5; la2018-h5
    has none) and ``test.list``."""
    lists = case_lists(layout, root)
    patients: dict[str, list[str]] = {}
    for case in lists["train"]:
        patients.setdefault(patient_of(layout, case), []).append(case)
    return CaseLists(train=tuple(tuple(cases) for cases in patients.values()),
                     validation=tuple(lists.get("val", ())), test=tuple(lists["test"]))


def _list_problems(
    root: Path, lists: Sequence[str], present: set[str], file_of: Callable[[str], Path]
) -> tuple[list[Problem], set[str]]:
    """Missing or unreadable lists, and list entries not in ``present`` (the problem names the
    file ``file_of(entry)`` the case should have); returns the problems and every id named."""
    problems: list[Problem] = []
    named: set[str] = set()
    for name in lists:
        try:
            entries = read_list(root / name)
        except FileProblemError as err:
            problems.append((Path(str(err.path)), err.problem))
            continue
        named.update(entries)
        problems += [(file_of(e), f"missing: case {e!r} is named in {name} but absent") for e in entries
                     if e not in present]
    return problems, named


# ----------------------------------------------------------------------------- la2018-h5


def la_list_cases(root: Path) -> list[str]:
    """Sorted case folders under ``2018LA_Seg_Training Set/`` (list entries without a folder are
    reported by :func:`la_stray_files`)."""
    folder = Path(root) / LA_CASES_DIR
    if not folder.is_dir():
        raise FileProblemError(folder, f"folder not found (the la2018-h5 layout needs {LA_CASES_DIR}/, "
                                       f"{' and '.join(LA_LISTS)})")
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def la_stray_files(root: Path, cases: Sequence[str]) -> list[Problem]:
    """List files missing, list entries without a case folder, case folders in no list."""
    root = Path(root)
    problems, named = _list_problems(root, LA_LISTS, set(cases), lambda c: root / LA_CASES_DIR / c / LA_FILE)
    if named:  # with no readable list, the missing lists are the problem
        problems += [(root / LA_CASES_DIR / c, f"case folder named in no list ({', '.join(LA_LISTS)})")
                     for c in cases if c not in named]
    return problems


def la2018_layout(spacing: Spacing = LA_SPACING_MM, name: str = "la2018-h5") -> Layout:
    """The la2018-h5 layout with voxel ``spacing`` (mm along S, H, W); register a variant
    with :func:`register_layout` under another ``name``."""
    geometry = H5Geometry(axes=LA_AXES, spacing=spacing)

    def sources(root: Path, case_id: str) -> CaseSources:
        path = Path(root) / LA_CASES_DIR / case_id / LA_FILE
        return CaseSources(images=(path,), label=path, h5=geometry)

    return Layout(
        name=name,
        list_cases=la_list_cases,
        sources=sources,
        channel_names=lambda root: ("MRI",),
        label_values=lambda root: (0, 1),
        meta_files=lambda root: [Path(root) / n for n in LA_LISTS if (Path(root) / n).is_file()],
        stray_files=la_stray_files,
        description=f"2018 Left Atrium (UA-MT h5): {LA_CASES_DIR}/<case>/{LA_FILE} (image, label 0/1), "
                    "train.list, test.list",
    )


def write_la_case(root: Path, case_id: str, image: np.ndarray, label: np.ndarray) -> Path:
    """Write ``<root>/2018LA_Seg_Training Set/<case>/mri_norm2.h5``: ``image`` float32 and
    ``label`` uint8, both (X, Y, Z), gzip-compressed as UA-MT writes them."""
    path = Path(root) / LA_CASES_DIR / case_id / LA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_h5(path, image.astype(np.float32), label.astype(np.uint8))


# ----------------------------------------------------------------------------- acdc-h5


def acdc_list_cases(root: Path) -> list[str]:
    """Sorted volume ids: the ``.h5`` files directly in ``data/``."""
    folder = Path(root) / ACDC_DATA_DIR
    if not folder.is_dir():
        raise FileProblemError(folder, f"folder not found (the acdc-h5 layout needs {ACDC_DATA_DIR}/ and the lists "
                                       f"{', '.join((ACDC_SLICE_LIST, *ACDC_LISTS))})")
    return sorted(p.name[:-3] for p in folder.iterdir()
                  if p.is_file() and p.name.endswith(".h5") and not p.name.startswith("."))


def acdc_stray_files(root: Path, cases: Sequence[str]) -> list[Problem]:
    """List files missing, volume list entries without a volume, slice list entries without a
    slice file, volumes in no list."""
    root = Path(root)
    problems, named = _list_problems(root, ACDC_LISTS, set(cases), lambda c: root / ACDC_DATA_DIR / f"{c}.h5")
    if named:
        problems += [(root / ACDC_DATA_DIR / f"{c}.h5", f"volume named in no list ({', '.join(ACDC_LISTS)})")
                     for c in cases if c not in named]
    slices = root / ACDC_DATA_DIR / ACDC_SLICES_DIR
    try:
        entries = read_list(root / ACDC_SLICE_LIST)
    except FileProblemError as err:
        return problems + [(Path(str(err.path)), err.problem)]
    return problems + [(slices / f"{e}.h5", f"missing: slice {e!r} is named in {ACDC_SLICE_LIST} but absent")
                       for e in entries if not (slices / f"{e}.h5").is_file()]


def _acdc_sources(root: Path, case_id: str) -> CaseSources:
    path = Path(root) / ACDC_DATA_DIR / f"{case_id}.h5"
    return CaseSources(images=(path,), label=path, h5=H5Geometry(axes=ACDC_AXES))


def write_acdc_case(root: Path, case_id: str, image: np.ndarray, label: np.ndarray) -> list[Path]:
    """Write volume ``data/<case>.h5`` (``image``, ``label`` (Z, Y, X)) and its slices
    ``data/slices/<case>_slice_<k>.h5`` (2D), as SSL4MIS's ACDC does; returns every file."""
    folder = Path(root) / ACDC_DATA_DIR
    (folder / ACDC_SLICES_DIR).mkdir(parents=True, exist_ok=True)
    image, label = image.astype(np.float32), label.astype(np.uint8)
    paths = [write_h5(folder / f"{case_id}.h5", image, label)]
    for k in range(image.shape[0]):
        paths.append(write_h5(folder / ACDC_SLICES_DIR / f"{case_id}_slice_{k}.h5", image[k], label[k]))
    return paths


def write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> Path:
    """One HDF5 file with datasets ``image`` and ``label`` (gzip)."""
    import h5py

    with h5py.File(path, "w") as handle:
        handle.create_dataset(H5_IMAGE, data=image, compression="gzip")
        handle.create_dataset(H5_LABEL, data=label, compression="gzip")
    return path


def write_list(path: Path, ids: Sequence[str]) -> Path:
    """A ``.list`` file: one id per line."""
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


LA2018_LAYOUT = register_layout(la2018_layout())

ACDC_LAYOUT = register_layout(
    Layout(
        name="acdc-h5",
        list_cases=acdc_list_cases,
        sources=_acdc_sources,
        channel_names=lambda root: ("MRI",),
        label_values=lambda root: (0, 1, 2, 3),
        meta_files=lambda root: [Path(root) / n for n in (ACDC_SLICE_LIST, *ACDC_LISTS) if (Path(root) / n).is_file()],
        stray_files=acdc_stray_files,
        classes=ACDC_CLASSES,
        description="ACDC (SSL4MIS h5): data/<patient>_frame<NN>.h5 volumes (labels 0-3: RV, Myo, LV), "
                    "data/slices/, train_slices.list, train/val/test.list",
    )
)
