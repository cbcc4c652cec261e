"""UniMatch: its streams, its strong views and CutMix boxes, its schedule, and the one loop."""

import json
import math

import pytest
import torch

from mismatch.config import load_trial_spec
from mismatch.methods.augment import colour_jitter, gaussian_blur
from mismatch.methods.mixing import cutmix_box
from mismatch.trial.run import run_trial
from tests.methods.tiny import tiny_batch, tiny_method


def test_feature_perturbation_touches_only_its_own_stream():
    torch.manual_seed(0)
    method = tiny_method("unimatch")
    batch = tiny_batch([True, False, False])
    decoder_calls, net_inputs = [], []
    method.net.decoders[0].register_forward_hook(
        lambda m, args, out: decoder_calls.append(([z.detach().clone() for z in args[0]], out.detach()))
    )
    method.net.register_forward_hook(lambda m, args, out: net_inputs.append(args[0].detach()))
    losses = method.training_step(batch, 0)
    assert set(losses) == {"dice", "bce", "strong1", "strong2", "feature_perturbation", "loss"}
    (weak_features, weak_out), (_, strong_out), (fp_features, fp_out) = decoder_calls  # order of the step
    with torch.no_grad():
        clean = method.net.encoder(batch.image)
        assert torch.equal(weak_out, method.net.decoders[0](clean))  # the weak stream is a clean forward
        assert all(torch.equal(a, b) for a, b in zip(weak_features, clean))  # dropout did not act in place
        assert torch.equal(strong_out, method.net(net_inputs[0])[0])  # so are the strong views
        clean_unl = method.net.decoders[0]([z[1:] for z in clean])
    assert not torch.equal(fp_out, clean_unl)  # only this stream reads dropped-out features
    dropped = [(z == 0).float().mean() for z in fp_features]
    assert all(0.2 < float(d) < 0.8 for d in dropped[1:])  # Dropout2d(0.5) zeroed about half the channels


def test_the_two_strong_views_get_their_own_cutmix_boxes():
    torch.manual_seed(0)
    method = tiny_method("unimatch", jitter_p=0.0, blur_p=0.0, cutmix_p=1.0)  # identity photometry: exact views
    image, mix = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    differ = 0
    for _ in range(10):
        v1, v2, b1, b2 = method.strong_views(image, mix)
        for view, box in ((v1, b1), (v2, b2)):
            assert torch.equal(view, torch.where(box.bool(), mix, image))
        differ += int(not torch.equal(b1, b2))
        assert all(b1[i].sum() > 0 for i in range(4))
    assert differ == 10


def test_cutmix_box_matches_unimatch_ranges():
    torch.manual_seed(0)
    areas = []
    for _ in range(200):
        box = cutmix_box(32, 32, p=1.0)
        rows, cols = torch.nonzero(box, as_tuple=True)
        if len(rows):
            assert int(box.sum()) == (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)  # a box
        areas.append(float(box.mean()))
    assert max(areas) <= 0.4 and sum(a == 0 for a in areas) < 20
    assert all(float(cutmix_box(32, 32, p=0.0).sum()) == 0 for _ in range(5))


def test_masked_targets_follow_the_boxes():
    torch.manual_seed(1)
    method = tiny_method("unimatch", jitter_p=0.0, blur_p=0.0, cutmix_p=1.0, threshold=0.5)
    label = torch.zeros(2, 1, 16, 16)
    label[1] = 1
    # pseudo-labels of the pasted region come from the slice that was pasted (the batch rolled by one)
    _, _, box, _ = method.strong_views(torch.zeros(2, 1, 16, 16), torch.ones(2, 1, 16, 16))
    target = label * box.logical_not() + label.roll(1, 0) * box
    assert torch.equal(target[0], box[0]) and torch.equal(target[1], 1 - box[1])


def test_strong_photometry_keeps_the_range_and_blur_keeps_constants():
    torch.manual_seed(0)
    image = torch.randn(3, 1, 16, 16)
    jittered = colour_jitter(image, 0.5, p=1.0)
    lo, hi = image.amin(dim=(-2, -1)), image.amax(dim=(-2, -1))
    assert (jittered.amin(dim=(-2, -1)) >= lo - 1e-5).all() and (jittered.amax(dim=(-2, -1)) <= hi + 1e-5).all()
    assert not torch.equal(jittered, image)
    assert torch.equal(colour_jitter(image, 0.5, p=0.0), image)
    assert torch.allclose(gaussian_blur(torch.full((2, 1, 16, 16), 3.0), p=1.0), torch.full((2, 1, 16, 16), 3.0))
    blurred = gaussian_blur(image, p=1.0)
    assert blurred.shape == image.shape and blurred.std() < image.std()


def test_every_trainable_parameter_gets_a_gradient():
    torch.manual_seed(0)
    method = tiny_method("unimatch", threshold=0.5)
    method.training_step(tiny_batch([True, True, False, False]), 0)["loss"].backward()
    for name, p in method.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("schedule", ["poly", "train"])
def test_poly_schedule_by_default(schedule, tiny_dict):
    spec = load_trial_spec(tiny_dict(method={"name": "unimatch", "width": 4, "schedule": schedule}, train={"lr": 0.01}))
    method = tiny_method("unimatch", schedule=schedule)
    (setup,) = method.configure_optimizers(spec.train, steps_per_epoch=5)
    for _ in range(4):
        setup.optimizer.step()
        setup.scheduler.step()
    total = spec.train.epochs * 5
    expected = 0.01 * (1 - 4 / total) ** 0.9 if schedule == "poly" else 0.01
    assert setup.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_unimatch_trains_with_the_one_loop_and_is_deterministic(tiny_dict):
    spec = load_trial_spec(tiny_dict(method={"name": "unimatch", "width": 4}, train={"stream": "two-stream"}))
    first, second = run_trial(spec), run_trial(spec)
    row = first.trial
    assert row["method"] == "unimatch" and row["model"] == "unet" and row["alpha"] == 1.0
    assert all(math.isfinite(v) for v in json.loads(row["final_losses_json"]).values())
    assert first.images.equals(second.images)
