"""Sliding-window inference of whole volumes (mismatch.evaluate_volumes): equal to a whole-volume
forward when one window covers the volume, the spec's overlap and blending reach MONAI, and
the tables a 3D trial's test volumes give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mismatch.config import load_trial_spec
from mismatch.data.volumes3d import VolumeSet, VolumeWindow
from mismatch.methods import Method
from mismatch.trial.volumes import (
    VOLUME_PATCH,
    NonFiniteVolumeError,
    predict_test_volumes,
    predict_volume,
    validate_volumes,
    volume_case_tables,
    volume_image_rows,
    volume_prediction_maps,
)
from tests.volumes3d_helpers import Tiny3D

CPU = torch.device("cpu")
# float32 convolutions of the same voxels, summed in another order at most: 1e-6 on a probability
TOLERANCE = 1e-6


class NetMethod(Method):
    """A method that tests with ``net`` (any :class:`Tiny3D`)."""

    def __init__(self, net: torch.nn.Module) -> None:
        from mismatch.methods.configs.sup import Sup1Config

        super().__init__(Sup1Config(), in_channels=1)
        self.net = net


def _method(decoders: int = 1, kernel: int = 3, seed: int = 0) -> NetMethod:
    torch.manual_seed(seed)
    return NetMethod(Tiny3D(1, 4, decoders=decoders, kernel=kernel)).eval()


def _volume(shape=(16, 32, 16), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, *shape)).astype(np.float32)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_one_window_covering_the_volume_equals_a_whole_volume_forward(mode):
    method, image = _method(), _volume()
    prob, decoders = predict_volume([method], image, VolumeWindow((16, 32, 16), overlap=0.5, mode=mode), CPU)
    with torch.no_grad():
        whole = method.predict_proba(torch.from_numpy(image[None]))[0, 0].numpy()
    assert prob.shape == (16, 32, 16) and decoders is None
    np.testing.assert_allclose(prob, whole, atol=TOLERANCE, rtol=0)


def test_a_voxelwise_network_gives_its_forward_with_many_overlapping_windows():
    method, image = _method(kernel=1), _volume((40, 36, 20))  # windows overlap and one is cut at each far edge
    prob, _ = predict_volume([method], image, VolumeWindow((16, 16, 16), overlap=0.5, mode="gaussian"), CPU)
    with torch.no_grad():
        whole = method.predict_proba(torch.from_numpy(image[None]))[0, 0].numpy()
    np.testing.assert_allclose(prob, whole, atol=TOLERANCE, rtol=0)


def test_a_volume_smaller_than_the_window_is_predicted_on_its_own_grid():
    prob, _ = predict_volume([_method()], _volume((10, 20, 16)), VolumeWindow((16, 32, 16)), CPU)
    assert prob.shape == (10, 20, 16) and ((prob > 0) & (prob < 1)).all()


def test_overlap_mode_and_window_reach_monai(monkeypatch):
    import monai.inferers

    calls = []
    real = monai.inferers.sliding_window_inference

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(monai.inferers, "sliding_window_inference", spy)
    predict_volume([_method()], _volume(), VolumeWindow((16, 16, 16), overlap=0.25, mode="constant"), CPU)
    predict_volume([_method()], _volume(), VolumeWindow((16, 16, 16), overlap=0.75, mode="gaussian"), CPU)
    assert [(c["roi_size"], c["overlap"], c["mode"]) for c in calls] == [
        ((16, 16, 16), 0.25, "constant"), ((16, 16, 16), 0.75, "gaussian")]


def test_the_ensemble_and_each_decoder_come_from_the_same_windows():
    a, b = _method(decoders=2, seed=0), _method(decoders=2, seed=1)
    image, window = _volume(), VolumeWindow((16, 32, 16))
    prob, decoders = predict_volume([a, b], image, window, CPU)
    assert len(decoders) == 2
    np.testing.assert_allclose(prob, (decoders[0] + decoders[1]) / 2, atol=TOLERANCE)
    with torch.no_grad():  # each decoder: the mean over the snapshots of its sigmoid
        x = torch.from_numpy(image[None])
        first = (torch.sigmoid(a.net(x)[0]) + torch.sigmoid(b.net(x)[0])) / 2
    np.testing.assert_allclose(decoders[0], first[0, 0].numpy(), atol=TOLERANCE)


def _test_set() -> VolumeSet:
    images, labels = [], []
    for shape, seed in (((16, 24, 16), 0), ((20, 16, 16), 1)):
        label = np.zeros(shape, np.uint8)
        label[4:10, 5:12, 3:9] = 1
        images.append(_volume(shape, seed) + 2.0 * label)
        labels.append(label)
    return VolumeSet(images, labels, ["a", "b"], [y.shape for y in labels], [(2.0, 1.0, 0.5)] * 2)


def test_test_volumes_give_one_case_row_each_and_a_row_per_qualifying_slice(tiny_dict):
    volumes, window = _test_set(), VolumeWindow((16, 16, 16))
    probs, totals = predict_test_volumes([_method(decoders=2)], volumes, window, CPU)
    ident = {"trial_id": "t"}
    images = volume_image_rows(ident, volumes, probs, min_foreground=0)
    assert images[["case_id", "slice_index"]].values.tolist() == [[c, d] for c in "ab" for d in range(4, 10)]
    assert (images["patch"] == VOLUME_PATCH).all() and (images["fg_pixels"] == 42).all()
    assert volume_image_rows(ident, volumes, probs, min_foreground=42).empty  # > 42 voxels: none qualifies
    cases, class_records = volume_case_tables(ident, volumes, probs, tolerance_mm=1.0)
    assert class_records == []  # binary: no classes table
    assert cases["case_id"].tolist() == ["a", "b"] and (cases["fg_voxels"] == 252).all()
    assert cases["spacing_z_mm"].tolist() == [2.0, 2.0] and cases["n_slices"].tolist() == [16, 20]
    assert ((cases["dice"] >= 0) & (cases["dice"] <= 1)).all()
    assert [t["count"].sum() for t in totals] == [sum(y.size for y in volumes.labels)] * 2  # every voxel, per decoder
    maps = volume_prediction_maps(volumes, probs, 0, 3)
    assert maps["image"].shape == (3, 24, 16) and maps["label"].shape == (3, 24, 16) and maps["prob"].dtype == np.uint8


def test_validation_is_the_mean_over_whole_volumes():
    volumes, window = _test_set(), VolumeWindow((16, 16, 16))
    val = validate_volumes(_method(), volumes, window, CPU)
    probs, _ = predict_test_volumes([_method()], volumes, window, CPU)
    from mismatch import results

    dice = [results.image_metrics(p, y)["dice"] for p, y in zip(probs, volumes.labels)]
    assert set(val) == {"val_iou", "val_dice", "val_mean_dice_2class"} and val["val_dice"] == pytest.approx(np.mean(dice))


def test_a_non_finite_probability_names_the_volume():
    volumes = _test_set()
    volumes.images[1][0, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteVolumeError, match="case_id='b'"):
        predict_test_volumes([_method()], volumes, VolumeWindow((16, 16, 16)), CPU)


def test_the_sliding_window_settings_come_from_the_spec(tiny_dict):
    data = {**tiny_dict()["data"], "spatial_dims": 3, "patch_size": [32, 16, 48], "sw_overlap": 0.125, "sw_mode": "constant"}
    spec = load_trial_spec(tiny_dict(data=data))
    assert VolumeWindow.from_spec(spec.data) == VolumeWindow((32, 16, 48), 0.5, 0.125, "constant")
