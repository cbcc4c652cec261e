"""BCP: the copy-paste mixes, their supervision, the stage switch and training through the loop."""

import json
import math

import pytest
import torch

from mismatch.config import TrainSpec, load_trial_spec
from mismatch.methods import Batch
from mismatch.methods.bcp import Mix, bidirectional_mixes
from mismatch.methods.mixing import copy_paste_mask
from mismatch.trial.run import run_trial
from tests.methods.tiny import tiny_batch, tiny_method


def known_mask() -> torch.Tensor:
    mask = torch.ones(16, 16)
    mask[2:12, 5:15] = 0
    return mask


def test_copy_paste_mask_has_one_zero_box_of_two_thirds_the_side():
    torch.manual_seed(0)
    for _ in range(20):
        mask = copy_paste_mask(16, 24)
        rows, cols = torch.nonzero(mask == 0, as_tuple=True)
        assert int((mask == 0).sum()) == 10 * 16  # int(16 * 2/3) x int(24 * 2/3)
        assert int(rows.max() - rows.min()) + 1 == 10 and int(cols.max() - cols.min()) + 1 == 16
        assert set(mask.unique().tolist()) == {0.0, 1.0}


def test_both_directions_paste_image_and_label_with_the_same_mask():
    lab_image, unl_image = torch.full((1, 1, 16, 16), 1.0), torch.full((1, 1, 16, 16), 2.0)
    lab_label, pseudo = torch.ones(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    mask = known_mask()
    box = mask == 0
    into_unl, into_lab = bidirectional_mixes(lab_image, lab_label, unl_image, pseudo, mask, alpha=0.5)
    # labelled crop in the unlabelled slice: ground truth (weight 1) in the box, pseudo-label (0.5) outside
    assert torch.equal(into_unl.image[0, 0], torch.where(box, 1.0, 2.0))
    assert torch.equal(into_unl.target()[0, 0], torch.where(box, 1.0, 0.0))
    assert torch.equal(into_unl.weight()[0, 0], torch.where(box, 1.0, 0.5))
    # unlabelled crop in the labelled slice: pseudo-label (0.5) in the box, ground truth (1) outside
    assert torch.equal(into_lab.image[0, 0], torch.where(box, 2.0, 1.0))
    assert torch.equal(into_lab.target()[0, 0], torch.where(box, 0.0, 1.0))
    assert torch.equal(into_lab.weight()[0, 0], torch.where(box, 0.5, 1.0))


def test_each_region_is_supervised_by_its_own_target_and_weight():
    mask = known_mask()
    inside = int((mask == 0).sum())
    outer, inner = torch.ones(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    logits = torch.full((1, 1, 16, 16), 30.0)  # right outside (target 1), wrong in the box (target 0)
    wrong_dice, wrong_bce = 1 - 1 / (inside + 1), 30.0  # Dice and BCE of the box, smoothing 1
    for outer_weight, inner_weight in ((1.0, 0.5), (0.5, 1.0)):
        mix = Mix(torch.zeros(1, 1, 16, 16), outer, inner, mask, outer_weight, inner_weight)
        expected = inner_weight * (wrong_dice + wrong_bce) / 2
        assert float(mix.loss(logits)) == pytest.approx(expected, rel=1e-4)


def test_training_step_mixes_the_pair_in_both_directions(monkeypatch):
    method = tiny_method("bcp", pretrain_steps=0, alpha=0.5)
    monkeypatch.setattr("mismatch.methods.bcp.copy_paste_mask", lambda h, w, ratio, device=None: known_mask())
    batch = tiny_batch([True, False])
    seen = []
    method.student.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    losses = method.training_step(batch, epoch=0)
    assert set(losses) == {"dice", "bce", "loss"}
    lab, unl, label = batch.image[:1], batch.image[1:], batch.label[:1]
    mask = known_mask()
    assert torch.equal(seen[0], torch.cat([unl * mask + lab * (1 - mask), lab * mask + unl * (1 - mask)]))
    pseudo = (torch.sigmoid(method.teacher(unl)[0]) >= 0.5).float()
    into_unl, into_lab = bidirectional_mixes(lab, label, unl, pseudo, mask, 0.5)
    logits = method.student(seen[0])[0]
    assert losses["loss"].item() == pytest.approx((into_unl.loss(logits[:1]) + into_lab.loss(logits[1:])).item())
    dice = into_unl.terms(logits[:1])[0] + into_lab.terms(logits[1:])[0]
    assert losses["dice"].item() == pytest.approx(dice.item() / 2)


def mixed_images(method, batch) -> int:
    """How many mixed images the student trains on in one step of ``batch``."""
    seen = []
    handle = method.student.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    method.training_step(batch, 0)
    handle.remove()
    return seen[0]


def _perturb(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))


def test_stage_switch_at_pretrain_steps_survives_a_state_dict_round_trip():
    torch.manual_seed(0)
    method = tiny_method("bcp", pretrain_steps=3)
    batch = tiny_batch([True, True, False, False])
    initial_teacher = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    assert method.pretraining and mixed_images(method, batch) == 2  # the two labelled slices
    for _ in range(2):
        _perturb(method.student)
        method.after_step()
    assert all(torch.equal(v, initial_teacher[k]) for k, v in method.teacher.state_dict().items())  # no EMA yet
    assert int(method.state_dict()["steps_done"]) == 2

    resumed = tiny_method("bcp", pretrain_steps=3)
    resumed.load_state_dict(method.state_dict())
    assert resumed.pretraining
    _perturb(resumed.student)
    resumed.after_step()  # the third step: the teacher restarts as the student
    assert not resumed.pretraining
    assert all(torch.equal(t, s) for t, s in zip(resumed.teacher.parameters(), resumed.student.parameters()))
    assert mixed_images(resumed, batch) == 4  # two pairs, both directions
    before = [t.clone() for t in resumed.teacher.parameters()]
    _perturb(resumed.student)
    resumed.after_step()  # then EMA
    d = resumed.config.ema_decay
    for t, b, s in zip(resumed.teacher.parameters(), before, resumed.student.parameters()):
        assert torch.allclose(t, d * b + (1 - d) * s)


@pytest.mark.parametrize("pretrain_steps", [5, 0])
def test_every_trainable_parameter_gets_a_gradient(pretrain_steps):
    method = tiny_method("bcp", pretrain_steps=pretrain_steps)
    losses = method.training_step(tiny_batch([True, True, False, False]), 0)
    losses["loss"].backward()
    for name, p in method.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        else:
            assert name.startswith("teacher.") and p.grad is None


def test_streaming_batches_of_one_kind_still_train():
    method = tiny_method("bcp", pretrain_steps=0)
    assert mixed_images(method, tiny_batch([False, False])) == 2  # copy-paste within the unlabelled slices
    assert mixed_images(method, tiny_batch([True])) == 1
    method = tiny_method("bcp", pretrain_steps=5)
    losses = method.training_step(Batch(torch.randn(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), torch.tensor([False])), 0)
    assert set(losses) == {"loss"} and losses["loss"].item() == 0.0


def test_bcp_trains_with_the_one_loop_through_both_stages_and_is_deterministic(tiny_dict):
    spec = load_trial_spec(tiny_dict(method={"name": "bcp", "width": 4, "pretrain_steps": 6}, train={"stream": "two-stream"}))
    first, second = run_trial(spec), run_trial(spec)
    row = first.trial
    assert row["method"] == "bcp" and row["model"] == "unet" and row["optimizer_steps"] > 6
    assert row["alpha"] == 0.5 and row["unlabelled_slices"] > 0
    assert all(math.isfinite(v) for v in json.loads(row["final_losses_json"]).values())
    assert first.images.equals(second.images)


def test_a_resumed_bcp_trial_equals_an_uninterrupted_one(tiny_dict, tmp_path, interrupt_after_first_epoch):
    # 20 steps per epoch: the stage switches in the second epoch, after the resume
    spec = load_trial_spec(tiny_dict(method={"name": "bcp", "width": 4, "pretrain_steps": 23}, train={"stream": "two-stream"}))
    interrupt_after_first_epoch(spec, tmp_path)
    resumed, straight = run_trial(spec, checkpoint_dir=tmp_path), run_trial(spec)
    assert resumed.trial["optimizer_steps"] == 40 and resumed.trial["resumed_from_epoch"] == 1
    assert resumed.images.equals(straight.images)


@pytest.mark.parametrize(("fraction", "expected"), [(0.25, 10), (0.5, 20), (0.0, 0)])
def test_pretraining_is_a_fraction_of_the_run_by_default(fraction, expected):
    # BCP's proportion (10,000 of 40,000 iterations) holds under any budget: 4 epochs x 10 steps
    method = tiny_method("bcp", pretrain_fraction=fraction)
    method.configure_optimizers(TrainSpec(epochs=4), 10)
    assert method.pretrain_steps == expected
    assert method.pretraining == (expected > 0)


def test_an_explicit_pretrain_steps_overrides_the_fraction():
    method = tiny_method("bcp", pretrain_steps=7, pretrain_fraction=0.5)
    method.configure_optimizers(TrainSpec(), 1000)
    assert method.pretrain_steps == 7
