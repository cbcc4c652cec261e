"""The MisMatch method's losses and alpha schedule."""

import pytest
import torch
from tiny import tiny_batch

from mismatch.config import load_trial_spec
from mismatch.losses import soft_dice_loss, symmetric_mse
from mismatch.methods import build_method


def _mismatch(**settings):
    spec = load_trial_spec({"data": {"synthetic": {}}, "method": {"name": "mismatch", "width": 4, **settings}})
    return build_method(spec.method, in_channels=1)


def _batch(labelled):
    return tiny_batch(labelled, seed=1)


def test_labelled_slices_get_dice_on_each_decoder_unlabelled_get_weighted_consistency():
    torch.manual_seed(0)
    method = _mismatch(alpha=0.5)
    batch = _batch([True, False])
    losses = method.training_step(batch, epoch=0)
    p1, p2 = (torch.sigmoid(lg) for lg in method.net(batch.image))
    dice = soft_dice_loss(p1[:1], batch.label[:1]) + soft_dice_loss(p2[:1], batch.label[:1])
    consistency = 0.5 * symmetric_mse(p1[1:], p2[1:])
    torch.testing.assert_close(losses["dice"], dice)
    torch.testing.assert_close(losses["consistency"], consistency)
    torch.testing.assert_close(losses["loss"], dice + consistency)


def test_a_labelled_only_batch_has_no_consistency_term():
    losses = _mismatch().training_step(_batch([True]), epoch=0)
    assert set(losses) == {"dice", "loss"}


def test_prediction_is_mean_of_decoder_probabilities():
    method = _mismatch().eval()
    x = torch.randn(2, 1, 16, 16)
    p1, p2 = (torch.sigmoid(lg) for lg in method.net(x))
    torch.testing.assert_close(method.predict_proba(x), (p1 + p2) / 2)


def test_alpha_constant_by_default_and_decays_as_the_authors_code():
    assert _mismatch().alpha_at(40) == 0.002
    decay = _mismatch(alpha_schedule="decay", alpha_decay_beta=0.5, alpha_decay_start=10)
    assert decay.alpha_at(5) == 0.002
    assert decay.alpha_at(12) == pytest.approx(0.002 * 0.25)


@pytest.mark.parametrize("model", ["mm", "mm-a", "mm-b", "mm-c"])
def test_decoder_ablation_variants(model):
    method = _mismatch(model=model)
    assert method.model_name == model and method.net.num_decoders == 2
