"""The 3D multi-class phantom ``organs3d``: written by ``mismatch data synth`` in the MSD layout,
passes ``data check``, holds classes 0..3 with real spacing, and fits the 3D networks."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from mismatch.cli import main
from mismatch.config import SynthSpec
from mismatch.data import load_case, make_phantom
from mismatch.data.synth import synth_defaults


@pytest.fixture(scope="module")
def organs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("organs") / "organs3d"
    assert main(["data", "synth", "organs3d", str(root), "--cases", "3", "--seed", "5"]) == 0
    return root


def test_defaults_are_small_and_divisible_by_16() -> None:
    cases, (h, w), slices = synth_defaults("organs3d")
    assert (cases, (h, w), slices) == (12, (64, 64), 48)
    assert h % 16 == w % 16 == slices % 16 == 0
    assert synth_defaults("vessels") == (10, (64, 64), 24)  # the other kinds keep theirs
    assert SynthSpec(kind="organs3d").kind == "organs3d"


def test_writes_msd_layout_with_class_names_and_real_spacing(organs_root) -> None:
    meta = json.loads((organs_root / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "cortex": 1, "medulla": 2, "pelvis": 3}
    assert meta["channel_names"] == {"0": "MR"} and meta["numTraining"] == 3
    assert sorted(p.name for p in (organs_root / "labelsTr").iterdir()) == [
        f"organs3d_{i:03d}.nii.gz" for i in range(3)]
    image = nib.load(organs_root / "imagesTr" / "organs3d_000_0000.nii.gz")
    label = nib.load(organs_root / "labelsTr" / "organs3d_000.nii.gz")
    assert image.shape == label.shape == (64, 64, 48)  # NIfTI (H, W, S)
    assert image.header.get_zooms() == pytest.approx((3.0, 3.0, 4.0))  # mm: 192 mm field of view
    np.testing.assert_allclose(image.affine, label.affine)


def test_data_check_passes(organs_root, capsys) -> None:
    assert main(["data", "check", "msd", str(organs_root)]) == 0
    assert "3 msd cases" in capsys.readouterr().out


def test_every_case_holds_all_four_classes_with_organ_like_contrast(organs_root) -> None:
    for i in range(3):
        case = load_case(organs_root, f"organs3d_{i:03d}")
        image, label = case.image[0], case.label
        assert image.shape == label.shape == (48, 64, 64)
        assert set(np.unique(label)) == {0, 1, 2, 3}
        counts = np.bincount(label.ravel(), minlength=4)
        assert counts[1] > counts[2] > counts[3] > 50  # cortex shell > medulla > pelvis
        means = [image[label == k].mean() for k in range(4)]
        assert means[3] > means[1] > means[2] > means[0]  # fluid bright, cortex above medulla
        # Two kidneys, one connected foreground component each, on either side of the midline.
        components, n = ndimage.label(label > 0)
        assert n == 2
        centres = ndimage.center_of_mass(label > 0, components, [1, 2])
        assert sorted(c[2] < 32 for c in centres) == [False, True]


def test_deterministic_per_seed_and_case() -> None:
    a = make_phantom("organs3d", (32, 32), 16, seed=1, index=0)
    b = make_phantom("organs3d", (32, 32), 16, seed=1, index=0)
    c = make_phantom("organs3d", (32, 32), 16, seed=1, index=1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])


def test_a_whole_case_is_a_valid_3d_network_input(organs_root) -> None:
    from mismatch.models.networks3d import check_input_3d

    case = load_case(organs_root, "organs3d_000")
    check_input_3d(torch.from_numpy(case.image[None]), in_channels=1)  # (1, 1, 48, 64, 64): no error
