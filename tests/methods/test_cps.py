"""CPS: each network learns only from the other's detached hard pseudo-labels."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_batch, tiny_method

from mismatch.config import load_trial_spec
from mismatch.methods.cps import cross_pseudo_losses, hard_pseudo_label
from mismatch.trial.run import run_trial


def _grads(net):
    return [p.grad for p in net.parameters()]


def test_hard_pseudo_label_thresholds_at_one_half_and_carries_no_gradient():
    logits = torch.tensor([-2.0, -0.1, 0.1, 3.0], requires_grad=True)
    label = hard_pseudo_label(logits)
    assert label.tolist() == [0.0, 0.0, 1.0, 1.0] and not label.requires_grad


def test_the_two_networks_start_different_and_depend_only_on_the_seed():
    torch.manual_seed(5)
    a = tiny_method("cps")
    torch.manual_seed(5)
    b = tiny_method("cps")
    assert any(not torch.equal(p, q) for p, q in zip(a.net1.parameters(), a.net2.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(a.net1.parameters(), b.net1.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(a.net2.parameters(), b.net2.parameters()))


def test_each_cps_term_sends_gradient_only_to_its_own_network():
    torch.manual_seed(0)
    method = tiny_method("cps")
    image = tiny_batch([False, False], seed=1).image
    logits1, logits2 = method.net1(image)[0], method.net2(image)[0]
    cps1, cps2 = cross_pseudo_losses(logits1, logits2)
    cps1.backward(retain_graph=True)
    assert all(g is not None for g in _grads(method.net1)) and all(g is None for g in _grads(method.net2))
    method.zero_grad(set_to_none=True)
    cps2.backward()
    assert all(g is None for g in _grads(method.net1)) and all(g is not None for g in _grads(method.net2))


def test_cps_terms_are_bce_against_the_other_networks_label():
    torch.manual_seed(0)
    logits1, logits2 = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    cps1, cps2 = cross_pseudo_losses(logits1, logits2)
    torch.testing.assert_close(cps1, F.binary_cross_entropy_with_logits(logits1, (logits2 > 0).float()))
    torch.testing.assert_close(cps2, F.binary_cross_entropy_with_logits(logits2, (logits1 > 0).float()))
    # net 2's output enters net 1's term only through its hard label: a change of net 2's
    # logits that keeps their signs leaves cps1 unchanged and changes cps2
    other1, other2 = cross_pseudo_losses(logits1, 3 * logits2)
    torch.testing.assert_close(other1, cps1)
    assert not torch.allclose(other2, cps2)


def test_training_step_weights_the_cps_terms_and_supervises_both_networks():
    torch.manual_seed(0)
    method = tiny_method("cps", alpha=2.0, rampup_epochs=0)
    batch = tiny_batch([True, False], seed=2)
    torch.manual_seed(1)
    losses = method.training_step(batch, epoch=0)
    with torch.no_grad():
        cps1, cps2 = cross_pseudo_losses(method.net1(batch.image)[0], method.net2(batch.image)[0])
    assert losses["cps1"].item() == pytest.approx(2.0 * cps1.item(), rel=1e-5)
    assert losses["cps2"].item() == pytest.approx(2.0 * cps2.item(), rel=1e-5)
    assert set(losses) == {"bce", "dice", "cps1", "cps2", "loss"}
    losses["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in method.parameters())


def test_pseudo_on_unlabelled_skips_a_labelled_only_batch():
    method = tiny_method("cps", pseudo_on="unlabelled")
    losses = method.training_step(tiny_batch([True], seed=2), epoch=0)
    assert set(losses) == {"bce", "dice", "loss"}


def test_prediction_and_inference_parameters_follow_predict_with():
    torch.manual_seed(0)
    one, mean = tiny_method("cps"), tiny_method("cps", predict_with="mean")
    mean.load_state_dict(one.state_dict())
    image = tiny_batch([False], seed=3).image
    one.eval(), mean.eval()
    torch.testing.assert_close(one.predict_proba(image), one.net1.probabilities(image))
    torch.testing.assert_close(mean.predict_proba(image),
                               0.5 * (one.net1.probabilities(image) + one.net2.probabilities(image)))
    assert mean.inference_parameters() == 2 * one.inference_parameters()
    assert one.inference_parameters() == sum(p.numel() for p in one.net1.parameters())


def test_trains_with_the_one_loop_twice_identically(tiny_dict):
    spec = load_trial_spec(tiny_dict(method={"name": "cps", "width": 4}))
    first, second = run_trial(spec), run_trial(spec)
    row = first.trial
    assert row["method"] == "cps" and row["model"] == "unet" and row["params"] > 0
    assert all(math.isfinite(v) for v in json.loads(row["final_losses_json"]).values())
    assert first.images.equals(second.images)
