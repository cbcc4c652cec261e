"""Baseline fidelity: NaN probabilities fail the trial naming the image; CCT's dropout rate;
MTA's alternating training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mismatch.config import load_trial_spec
from mismatch.data import SliceSet
from mismatch.methods import Batch, build_method
from mismatch.results import image_metrics
from mismatch.trial.evaluate import check_probabilities
from mismatch.trial.run import run_trial
from mismatch.trial.state import NON_FINITE_ERRORS, NonFiniteProbabilityError


def _slices(n: int = 3) -> SliceSet:
    return SliceSet(images=np.zeros((n, 1, 8, 8), np.float32), labels=np.zeros((n, 8, 8), np.uint8),
                    case_ids=[f"case_{i}" for i in range(n)], slice_index=np.arange(10, 10 + n),
                    patch=["full", "top-left", "full"][:n])


def test_a_nan_probability_raises_naming_the_image() -> None:
    prob = np.full((3, 8, 8), 0.2, np.float32)
    check_probabilities(prob, _slices(), "test")  # finite: nothing to say
    prob[1, 3, 4] = np.nan
    prob[2, 0, 0] = np.inf
    with pytest.raises(NonFiniteProbabilityError,
                       match=r"test image case_id='case_1' slice_index=11 patch='top-left' \(1 pixels; 2 of 3"):
        check_probabilities(prob, _slices(), "test")
    assert NonFiniteProbabilityError in NON_FINITE_ERRORS  # the runner records it as a failed trial


def test_a_nan_probability_makes_the_images_metrics_nan_not_background() -> None:
    prob = np.zeros((8, 8), np.float32)
    label = np.zeros((8, 8), np.uint8)
    assert image_metrics(prob, label)["iou"] == 1.0  # empty truth, empty prediction
    prob[0, 0] = np.nan
    row = image_metrics(prob, label)
    assert all(np.isnan(row[k]) for k in ("iou", "dice", "mean_dice_2class", "ece", "brier"))


def test_a_trial_whose_network_outputs_nan_fails_naming_a_test_image(tiny_dict, monkeypatch) -> None:
    import mismatch.trial.evaluate as evaluate

    spec = load_trial_spec(tiny_dict(method={"name": "sup1", "width": 4}, train={"epochs": 1, "snapshot_k": 1}))
    real_predict = evaluate.predict

    def nan_at_test(methods, images, device, labels=None):  # the test set is predicted with labels
        prob, decoders = real_predict(methods, images, device, labels)
        if labels is not None:
            prob[-1, 2, 2] = np.nan
        return prob, decoders

    monkeypatch.setattr(evaluate, "predict", nan_at_test)
    with pytest.raises(NonFiniteProbabilityError, match=r"test image case_id='[^']+' slice_index=\d+ patch='full'"):
        run_trial(spec)


def test_cct_feature_dropout_defaults_to_0_3(tiny_dict) -> None:
    spec = load_trial_spec(tiny_dict(method={"name": "cct", "width": 4}))
    assert spec.method.dropout_rate == 0.3
    from mismatch.methods.cct import dropout

    torch.manual_seed(0)
    z = torch.ones(4, 400, 2, 2)
    kept = (dropout([z], z, 0.3)[0][:, :, 0, 0] != 0).float().mean().item()
    assert kept == pytest.approx(0.7, abs=0.03)


def test_mta_alternates_objectives_and_keeps_its_turn_in_the_state_dict(tiny_dict) -> None:
    joint = load_trial_spec(tiny_dict(method={"name": "mta", "width": 4}))
    alternating = load_trial_spec(tiny_dict(method={"name": "mta", "width": 4, "training": "alternating"}))
    assert joint.method.training == "joint" and alternating.trial_id() != joint.trial_id()
    assert "training" not in joint.identity_dict()["method"]  # stored MTA trials keep their ids
    method = build_method(alternating.method, 1)
    image = torch.rand(2, 1, 32, 32)
    batch = Batch(image=image, label=(image > 0.5).float(), labelled=torch.tensor([True, False]), n_labelled=1)
    keys = [sorted(method.training_step(batch, 0)) for _ in range(3)]
    assert keys == [["dice", "loss"], ["loss", "reconstruction"], ["dice", "loss"]]
    unlabelled = Batch(image=image, label=torch.zeros_like(image), labelled=torch.tensor([False, False]), n_labelled=0)
    method.turn.count = 0
    assert sorted(method.training_step(unlabelled, 0)) == ["loss", "reconstruction"]  # no label: reconstruct
    method.turn.count = 5
    other = build_method(alternating.method, 1)
    other.load_state_dict(method.state_dict())
    assert other.turn.count == 5
    assert not any("turn" in k for k in build_method(joint.method, 1).state_dict())
