"""CCT: perturbations reach the auxiliary decoders' inputs, never the main decoder's."""

import pytest
import torch
from tiny import tiny_batch, tiny_method

from mismatch.config import SpecError
from mismatch.methods.cct import context_masking, object_masking
from mismatch.models import build_model

RANDOM = ["feature-noise", "feature-drop", "dropout"]  # the prediction-guided maskings are tested below


def _method(**settings):
    return tiny_method('cct', **settings)


def _batch(labelled):
    return tiny_batch(labelled, seed=4)


def _record_inputs(module, store):
    return module.register_forward_pre_hook(lambda m, args: store.append([f.detach().clone() for f in args[0]]))


def test_perturbations_change_aux_inputs_and_never_the_main_decoders():
    torch.manual_seed(0)
    method = _method(perturbations=RANDOM)
    batch = _batch([True, False])
    main_inputs, aux_inputs = [], [[] for _ in method.aux]
    _record_inputs(method.net.decoders[0], main_inputs)
    for decoder, store in zip(method.aux, aux_inputs):
        _record_inputs(decoder, store)
    losses = method.training_step(batch, epoch=0)
    assert set(losses) == {"dice", "consistency", "loss"}
    clean = [f.detach() for f in method.net.encoder(batch.image)]
    assert len(main_inputs) == 1
    assert all(torch.equal(a, c) for a, c in zip(main_inputs[0], clean))
    unlabelled = [c[1:] for c in clean]
    for name, store in zip(RANDOM, aux_inputs):
        assert len(store) == 1, name  # each auxiliary decoder runs once, on the unlabelled slice
        assert not any(torch.equal(a, c) for a, c in zip(store[0], unlabelled)), name


def test_consistency_targets_are_detached_so_main_decoder_learns_only_from_labels():
    method = _method()
    method.training_step(_batch([False]), epoch=10)["loss"].backward()
    assert all(p.grad is None for p in method.net.decoders[0].parameters())
    assert all(p.grad is not None for p in method.net.encoder.parameters())
    assert all(p.grad is not None for p in method.aux.parameters())


def test_object_and_context_masking_split_the_features():
    features = [torch.rand(1, 2, 8, 8), torch.rand(1, 3, 4, 4)]
    prob = torch.zeros(1, 1, 8, 8)
    prob[..., :4, :4] = 0.9
    obj, ctx = object_masking(features, prob), context_masking(features, prob)
    for f, o, c in zip(features, obj, ctx):
        torch.testing.assert_close(o + c, f)
    assert (ctx[0][..., 4:, :] == 0).all() and (obj[0][..., :4, :4] == 0).all()


def test_one_aux_decoder_per_perturbation_and_test_time_is_the_unet():
    method = _method(perturbations=["dropout", "feature-noise"])
    assert len(method.aux) == 2
    unet = build_model("unet", in_channels=1, width=4)
    assert method.inference_parameters() == sum(p.numel() for p in unet.parameters())
    x = torch.randn(1, 1, 16, 16)
    method.eval()
    torch.testing.assert_close(method.predict_proba(x), torch.sigmoid(method.net(x)[0]))
    with pytest.raises(SpecError, match="perturbations"):
        _method(perturbations=["vat"])
