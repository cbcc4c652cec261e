"""FixMatch: confident weak-view pseudo-labels, strong views paired pixel for pixel."""

import pytest
import torch
from tiny import tiny_method
from torch import nn

from mismatch.methods import Batch
from mismatch.methods.augment import GEOMETRIC_OPS
from mismatch.methods.fixmatch import masked_bce, pseudo_labels


def _method(**settings):
    return tiny_method('fixmatch', **settings)


def test_pixels_below_the_confidence_threshold_are_masked():
    prob = torch.tensor([0.02, 0.08, 0.1, 0.5, 0.9, 0.97]).view(1, 1, 1, 6)
    label, mask = pseudo_labels(prob, threshold=0.95)
    assert label.flatten().tolist() == [0, 0, 0, 1, 1, 1]
    # confidences 0.98, 0.92, 0.9, 0.5, 0.9, 0.97
    assert mask.flatten().tolist() == [1, 0, 0, 0, 0, 1]


def test_masked_pixels_give_no_gradient():
    logits = torch.randn(1, 1, 4, 4, requires_grad=True)
    target = (torch.rand(1, 1, 4, 4) > 0.5).float()
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    masked_bce(logits, target, mask).backward()
    assert (logits.grad[..., 2:, :] == 0).all() and (logits.grad[..., :2, :] != 0).all()


class _FixedLogits(nn.Module):
    """A stand-in network whose logits are a parameter, whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, x):
        return [self.logits.expand(x.shape[0], -1, -1, -1)]


def test_unlabelled_loss_uses_only_confident_pixels_of_the_weak_view():
    method = _method(alpha=2.0, ra_ops=["identity"])
    prob = torch.tensor([[0.99, 0.9], [0.03, 0.6]]).view(1, 1, 2, 2)
    method.net = _FixedLogits(torch.logit(prob))
    batch = Batch(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.tensor([False]))
    losses = method.training_step(batch, epoch=0)
    assert set(losses) == {"pseudo_label", "loss"}
    bce = -torch.log(torch.tensor([0.99, 0.97]))  # only the two confident pixels count
    torch.testing.assert_close(losses["pseudo_label"], 2.0 * bce.sum() / 4)
    losses["loss"].backward()
    grad = method.net.logits.grad.flatten()
    assert grad[1] == 0 and grad[3] == 0 and grad[0] != 0 and grad[2] != 0


@pytest.mark.parametrize("ops", [sorted(set(GEOMETRIC_OPS) - {"rotate"}), ["translate_x", "translate_y"]])
def test_geometric_strong_view_keeps_image_label_and_mask_aligned(ops):
    method = _method(ra_ops=ops, ra_n_ops=3)
    image = torch.zeros(2, 1, 16, 16)
    image[:, :, 2:5, 3] = 1.0
    image[:, :, 4, 3:9] = 1.0  # an asymmetric marker
    for seed in range(5):
        torch.manual_seed(seed)
        strong, label, mask = method.strong_view(image, image.clone(), torch.ones_like(image))
        assert torch.equal(strong, label)
        # pixels shifted in from outside the slice are excluded from the loss
        assert (strong[mask == 0] == 0).all()
    torch.manual_seed(0)
    _, _, mask = method.strong_view(image, image.clone(), torch.ones_like(image))
    if ops == ["translate_x", "translate_y"]:
        assert (mask == 0).any()


def test_rotation_in_the_strong_view_moves_label_with_image():
    method = _method(ra_ops=["rotate"], ra_n_ops=1)
    image = torch.zeros(1, 1, 16, 16)
    image[..., 2:6, 3:7] = 1.0
    torch.manual_seed(0)
    strong, label, _ = method.strong_view(image, image.clone(), torch.ones_like(image))
    assert label.sum() > 0 and bool((strong[label > 0] > 0).all())


def test_default_strong_view_has_no_shear_and_test_time_net_is_a_unet():
    method = _method()
    assert not any("shear" in op for op in method.config.ra_ops)
    assert method.model_name == "unet"
    assert method.config.threshold == 0.95
