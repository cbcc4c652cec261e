"""MTA: segmentation plus attention-separated reconstruction from a shared encoder."""

import torch
from tiny import tiny_batch, tiny_method

from mismatch.methods.mta import attended_images
from mismatch.models import build_model


def _method(**settings):
    return tiny_method('mta', in_channels=2, **settings)


def _batch(labelled):
    return tiny_batch(labelled, channels=2, seed=6)


def test_reconstruction_loss_falls_when_trained_on_one_fixed_image():
    torch.manual_seed(0)
    method = _method()
    batch = _batch([False])
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-2)
    history = []
    for _ in range(30):
        losses = method.training_step(batch, epoch=0)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(float(losses["reconstruction"].detach()))
    assert set(losses) == {"reconstruction", "loss"}
    assert sum(history[-3:]) / 3 < 0.75 * history[0]


def test_attention_is_the_label_on_labelled_slices():
    method = _method(noise_std=0.0, alpha=1.0)
    batch = _batch([True])
    method.reconstruction.forward = lambda bridge: torch.zeros(1, 4, 16, 16)
    losses = method.training_step(batch, epoch=0)
    target = attended_images(batch.image, batch.label)
    torch.testing.assert_close(losses["reconstruction"], (target**2).mean())
    assert target.shape == (1, 4, 16, 16)
    torch.testing.assert_close(target[:, :2] + target[:, 2:], batch.image)


def test_unlabelled_attention_is_detached_from_the_segmentation_decoder():
    method = _method()
    method.training_step(_batch([False]), epoch=0)["loss"].backward()
    assert all(p.grad is None for p in method.net.decoders[0].parameters())
    assert all(p.grad is not None for p in method.net.encoder.parameters())


def test_test_time_network_is_the_segmentation_unet():
    method = _method().eval()
    unet = build_model("unet", in_channels=2, width=4)
    assert method.inference_parameters() == sum(p.numel() for p in unet.parameters())
    x = torch.randn(1, 2, 16, 16)
    torch.testing.assert_close(method.predict_proba(x), torch.sigmoid(method.net(x)[0]))
