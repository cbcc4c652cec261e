"""Every registered method: a tiny train step with finite losses and a gradient everywhere."""

import math

import pytest
import torch

from mismatch.config import load_trial_spec
from mismatch.methods import Batch, build_method, list_methods, register_method
from mismatch.methods.base import Method


def _batch(labelled):
    g = torch.Generator().manual_seed(0)
    n = len(labelled)
    return Batch(
        image=torch.randn(n, 2, 16, 16, generator=g),
        label=(torch.rand(n, 1, 16, 16, generator=g) > 0.6).float(),
        labelled=torch.tensor(labelled),
    )


def _method(name, **settings):
    spec = load_trial_spec({"data": {"synthetic": {}}, "method": {"name": name, **settings}})
    if hasattr(spec.method, "width"):
        spec = spec.model_copy(update={"method": spec.method.model_copy(update={"width": 4})})
    return build_method(spec.method, in_channels=2)


@pytest.mark.parametrize("name", list_methods())
def test_train_step_reaches_every_parameter(name):
    torch.manual_seed(0)
    method = _method(name)
    method.train()
    losses = method.training_step(_batch([True, False, True, False]), epoch=0)
    assert "loss" in losses
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    losses["loss"].backward()
    # A method that updates some parameters by a rule (e.g. an EMA teacher) marks them
    # requires_grad=False; every trainable parameter must receive a gradient.
    trainable = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    prob = method.eval().predict_proba(torch.randn(1, 2, 16, 16))
    assert prob.shape == (1, 1, 16, 16) and 0 <= prob.min() and prob.max() <= 1


def test_duplicate_method_name_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_method("mismatch")(type("Again", (Method,), {}))


@pytest.mark.parametrize("name", list_methods())
def test_prediction_is_the_mean_of_the_decoders_where_there_are_several(name):
    torch.manual_seed(0)
    method = _method(name).eval()
    x = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        decoders = method.decoder_probabilities(x)
        if decoders is None:
            return
        assert len(decoders) == len(method.decoder_names()) >= 2
        torch.testing.assert_close(method.predict_proba(x), sum(decoders) / len(decoders))
