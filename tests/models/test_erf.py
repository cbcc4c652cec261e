"""Effective receptive field: the paper's ordering ERF(PASB side) > ERF(main) > ERF(NASB side)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mismatch.models.erf import format_erf_table, measure_all, measure_erf, summarise_map

FAST = dict(channels=16, size=25, n_inits=4, n_inputs=4, seed=0)


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, int], dict]:
    measured = measure_all(branches=("main", "pasb", "nasb"), depths=(0, 4), **FAST)
    return {(row["branch"], row["depth"]): row for row in measured}


def test_block_level_ordering(rows: dict) -> None:
    pasb, main, nasb = (rows[(b, 0)] for b in ("pasb", "main", "nasb"))
    assert pasb["rms_radius"] > main["rms_radius"] > nasb["rms_radius"]
    assert pasb["r50"] > main["r50"] > nasb["r50"]
    assert pasb["r90"] > main["r90"] >= nasb["r90"]


def test_ordering_in_context_after_four_conv_layers(rows: dict) -> None:
    pasb, main, nasb = (rows[(b, 4)] for b in ("pasb", "main", "nasb"))
    assert pasb["rms_radius"] > main["rms_radius"] > nasb["rms_radius"]
    assert pasb["r90"] > main["r90"] > nasb["r90"]
    assert pasb["r50"] > main["r50"] >= nasb["r50"]


def test_context_grows_the_erf(rows: dict) -> None:
    for branch in ("main", "pasb", "nasb"):
        assert rows[(branch, 4)]["rms_radius"] > rows[(branch, 0)]["rms_radius"]
        assert rows[(branch, 4)]["edge_mass"] < 1e-3


def test_factory_single_conv_stays_within_3x3() -> None:
    def conv3x3(channels: int) -> nn.Module:
        return nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    row = measure_erf(conv3x3, channels=4, size=9, n_inits=2, n_inputs=2, return_map=True)
    assert row["branch"] == "conv3x3"
    assert row["r90"] <= np.sqrt(2) + 1e-9 and row["area90"] <= 9
    erf = row["map"]
    assert erf.shape == (9, 9) and np.isclose(erf.sum(), 1.0)
    assert erf[3:6, 3:6].sum() == pytest.approx(1.0)


def test_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = measure_erf("nasb", channels=8, size=15, n_inits=2, n_inputs=2, seed=7)
    after = torch.rand(1)
    b = measure_erf("nasb", channels=8, size=15, n_inits=2, n_inputs=2, seed=7)
    assert torch.equal(before, after)
    assert a == b


def test_live_norm_stats_adds_a_global_floor() -> None:
    kwargs = dict(channels=8, size=21, n_inits=2, n_inputs=2)
    frozen = measure_erf("main", norm_stats="frozen", **kwargs)
    live = measure_erf("main", norm_stats="live", **kwargs)
    assert frozen["edge_mass"] == 0.0 and live["edge_mass"] > 0.0
    with pytest.raises(ValueError, match="norm_stats"):
        measure_erf("main", norm_stats="bogus", **kwargs)


def test_summarise_map_on_known_maps() -> None:
    delta = np.zeros((7, 7))
    delta[3, 3] = 1.0
    s = summarise_map(delta)
    assert (s["r50"], s["area50"], s["r90"], s["rms_radius"]) == (0.0, 1, 0.0, 0.0)
    cross = np.zeros((7, 7))
    cross[3, 3] = cross[2, 3] = cross[4, 3] = cross[3, 2] = cross[3, 4] = 1.0
    s = summarise_map(cross, shares=(0.2, 0.9))
    assert (s["r20"], s["area20"], s["r90"], s["area90"]) == (0.0, 1, 1.0, 5)


def test_unknown_branch_and_table() -> None:
    with pytest.raises(KeyError, match="pasb"):
        measure_erf("nope")
    row = measure_erf("plain", channels=4, size=9, n_inits=1, n_inputs=1)
    table = format_erf_table([row])
    assert "radius@50%" in table and "area@90%" in table and "plain" in table
    assert format_erf_table([]) == "(no rows)"


# ----------------------------------------------------------------------------- 3D blocks

FAST_3D = dict(channels=8, size=15, n_inits=2, n_inputs=2, seed=0, spatial_dims=3)


def test_3d_block_ordering_on_a_small_volume() -> None:
    rows = {b: measure_erf(b, **FAST_3D, return_map=True) for b in ("main", "pasb", "nasb")}
    pasb, main, nasb = rows["pasb"], rows["main"], rows["nasb"]
    assert pasb["rms_radius"] > main["rms_radius"] > nasb["rms_radius"]
    assert pasb["r90"] > main["r90"] > nasb["r90"]
    for row in rows.values():
        assert row["spatial_dims"] == 3 and row["map"].shape == (15, 15, 15)
        assert np.isclose(row["map"].sum(), 1.0) and row["edge_mass"] < 1e-3
    # The main branch is two 3x3x3 convs: nothing reaches beyond the centred 5x5x5 cube.
    assert main["map"][5:10, 5:10, 5:10].sum() == pytest.approx(1.0)
    # PASB's dilation 5 reaches 5 voxels out along an axis (a 9x9x9 support, dilated 5).
    assert pasb["map"][7, 7, 2] > 0 and pasb["map"][7, 7, 12] > 0


def test_3d_branches_are_the_3d_blocks() -> None:
    from torch import nn

    from mismatch.models.blocks import NASBSide, PASBSide
    from mismatch.models.erf import BRANCHES_3D

    pasb, nasb = BRANCHES_3D["pasb"](16), BRANCHES_3D["nasb"](16)
    assert isinstance(pasb, PASBSide) and isinstance(pasb.dilated.conv, nn.Conv3d)
    assert isinstance(nasb, NASBSide) and isinstance(nasb.conv1.conv, nn.Conv3d)
    with pytest.raises(ValueError, match="spatial_dims"):
        measure_erf("main", spatial_dims=4)


def test_summarise_map_on_a_known_volume() -> None:
    cube = np.zeros((5, 5, 5))
    cube[2, 2, 2] = 1.0
    cube[1, 2, 2] = cube[3, 2, 2] = cube[2, 1, 2] = cube[2, 3, 2] = cube[2, 2, 1] = cube[2, 2, 3] = 1.0
    s = summarise_map(cube, shares=(0.1, 0.9))
    assert (s["r10"], s["area10"], s["r90"], s["area90"]) == (0.0, 1, 1.0, 7)
    assert s["rms_radius"] == pytest.approx(np.sqrt(6 / 7)) and s["edge_mass"] == 0.0
    cube[0, 0, 0] = 7.0  # a corner of the outer shell: half the mass
    assert summarise_map(cube)["edge_mass"] == pytest.approx(0.5)
