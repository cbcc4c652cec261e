"""Training hooks: optimiser and schedule settings, parameter groups, several optimisers,
clipping, the non-finite check every N steps, resume with a schedule, and sync-free steps."""

import math

import pytest
import torch

from mismatch.config import SpecError, TrainSpec, load_trial_spec
from mismatch.data import load_trial_data
from mismatch.methods import Batch, Method, build_method, list_methods
from mismatch.methods.mismatch import MisMatch
from mismatch.optim import Optimization, OptimizerSetup, build_optimizer, build_scheduler
from mismatch.trial.batches import steps_per_epoch
from mismatch.trial.run import run_trial
from mismatch.trial.state import NonFiniteLossError


def tiny_method(name: str) -> Method:
    spec = load_trial_spec({"data": {"synthetic": {}}, "method": {"name": name, "width": 4}})
    return build_method(spec.method, in_channels=1)


def tiny_batch(labelled: list[bool], seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    n = len(labelled)
    return Batch(torch.randn(n, 1, 16, 16, generator=g), (torch.rand(n, 1, 16, 16, generator=g) > 0.5).float(),
                 torch.tensor(labelled))


def _lrs(train: TrainSpec, steps: int, steps_per_epoch: int = 4) -> list[float]:
    """The learning rate of each of ``steps`` optimiser steps under ``train``'s schedule."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([{"params": [param]}], train)
    scheduler = build_scheduler(optimizer, train.schedule, train.epochs, steps_per_epoch)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_default_training_hooks_keep_todays_trial_id(tiny_spec, tiny_dict):
    # The id of the tiny spec before the hooks existed; new keys at their defaults are not
    # part of a trial's identity, set ones are.
    assert tiny_spec.trial_id() == "mismatch-1c5998f23ff3"
    defaults = {"schedule": {"name": "constant"}, "precision": "none", "check_every": 7}
    explicit = load_trial_spec(tiny_dict(train=defaults))
    assert explicit.trial_id() == tiny_spec.trial_id()
    assert load_trial_spec(tiny_dict(train={"schedule": {"name": "poly"}})).trial_id() != tiny_spec.trial_id()
    again = load_trial_spec(load_trial_spec(tiny_dict(train={"optimizer": "sgd", "nesterov": True})).model_dump())
    assert again.train.effective_momentum() == 0.9 and again.train.nesterov


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"momentum": 0.9}, "momentum and nesterov apply to optimizer: sgd"),
        ({"schedule": {"name": "cosine", "power": 2.0}}, "schedule.power applies to schedule name: poly"),
        ({"schedule": {"name": "step"}}, "needs step_size"),
        ({"precision": "fp16"}, "precision: fp16 needs CUDA"),  # the tiny spec runs on device: cpu
        ({"schedule": {"name": "poly", "warmpu": 3}}, "did you mean 'warmup'"),
    ],
)
def test_settings_that_would_be_ignored_are_spec_errors(tiny_dict, train, message):
    with pytest.raises(SpecError, match=message):
        load_trial_spec(tiny_dict(train=train))


def test_poly_schedule_follows_the_formula_after_a_warm_up():
    train = TrainSpec(lr=0.1, epochs=3, schedule={"name": "poly", "power": 0.9, "warmup": 2, "unit": "steps",
                                                   "warmup_start": 0.25})
    lrs = _lrs(train, 12)  # 3 epochs x 4 steps: 2 warm-up steps, then T = 10
    assert lrs[:2] == pytest.approx([0.1 * 0.25, 0.1 * (0.25 + 0.75 / 2)])
    assert lrs[2:] == pytest.approx([0.1 * (1 - k / 10) ** 0.9 for k in range(10)], rel=1e-9)


def test_cosine_and_step_schedules_count_epochs():
    cosine = _lrs(TrainSpec(lr=1.0, epochs=2, schedule={"name": "cosine", "min_lr": 0.1}), 8)
    assert cosine == pytest.approx([0.1 + 0.45 * (1 + math.cos(math.pi * k / 8)) for k in range(8)])
    step = _lrs(TrainSpec(lr=1.0, epochs=3, schedule={"name": "step", "step_size": 1, "gamma": 0.5}), 12)
    assert step == pytest.approx([1.0] * 4 + [0.5] * 4 + [0.25] * 4)
    assert _lrs(TrainSpec(lr=0.3), 5) == [0.3] * 5  # constant: exactly the spec's rate


class _HeadLR(MisMatch):
    """MisMatch whose decoders learn ten times faster than its encoder (a throwaway method)."""

    def param_groups(self, train):
        head = [p for name, p in self.named_parameters() if ".decoders." in f".{name}"]
        rest = [p for name, p in self.named_parameters() if ".decoders." not in f".{name}"]
        return [{"params": rest}, {"params": head, "lr": 10 * train.lr}]


def test_a_method_can_give_its_head_its_own_learning_rate():
    base = tiny_method("mismatch")
    method = _HeadLR(base.config, in_channels=1)
    train = TrainSpec(lr=0.01, optimizer="sgd", momentum=0.5)
    [setup] = method.configure_optimizers(train, steps_per_epoch=3)
    groups = setup.optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.01, 0.1]
    assert all(g["momentum"] == 0.5 for g in groups)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in method.parameters()) and len(groups[1]["params"]) > 0
    # the default: one group of the trainable parameters (an EMA teacher's are not)
    teacher = tiny_method("mean-teacher")
    [default] = teacher.configure_optimizers(TrainSpec(), steps_per_epoch=3)
    assert len(default.optimizer.param_groups) == 1
    assert len(default.optimizer.param_groups[0]["params"]) == len(list(teacher.student.parameters()))


def test_several_optimisers_are_all_stepped_and_clipping_bounds_the_joint_norm():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    train = TrainSpec(lr=1.0, optimizer="sgd", momentum=0.0, clip_grad_norm=0.5,
                      schedule={"name": "step", "step_size": 1, "unit": "steps", "gamma": 0.5})
    setups = []
    for p in (a, b):
        opt = build_optimizer([{"params": [p]}], train)
        setups.append(OptimizerSetup(opt, build_scheduler(opt, train.schedule, 1, 10)))
    optim = Optimization(setups, train, torch.device("cpu"))
    loss = (a * torch.arange(3.0)).sum() + (b * 2.0).sum()  # gradient norm sqrt(5 + 16) = 4.58
    optim.step(loss)
    change = torch.cat([a.detach(), b.detach()])
    assert float(change.norm()) == pytest.approx(0.5)  # SGD at lr 1: the step is the clipped gradient
    assert torch.all(change[1:] < 0)
    assert [s.optimizer.param_groups[0]["lr"] for s in setups] == [0.5, 0.5]  # both schedules stepped


@pytest.mark.parametrize(("check_every", "calls", "steps"), [(1, 3, "step 2"), (2, 4, "steps 2-3")])
def test_a_nan_stops_the_trial_at_the_next_check_naming_the_steps(tiny_dict, monkeypatch, check_every, calls, steps):
    real = MisMatch.training_step
    seen = {"n": 0}

    def poisoned(self, batch, epoch):
        losses = real(self, batch, epoch)
        seen["n"] += 1
        if seen["n"] == 3:  # step 2
            losses["dice" if "dice" in losses else "consistency"] = torch.tensor(float("inf"))
        return losses

    monkeypatch.setattr(MisMatch, "training_step", poisoned)
    spec = load_trial_spec(tiny_dict(train={"check_every": check_every}))
    with pytest.raises(NonFiniteLossError, match=rf"loss '(dice|consistency)' is inf in {steps} \(epoch 0\)$"):
        run_trial(spec)
    assert seen["n"] == calls  # stopped at the first check after the bad step


def test_resume_with_a_poly_schedule_equals_an_uninterrupted_trial(tiny_dict, tmp_path, interrupt_after_first_epoch):
    spec = load_trial_spec(tiny_dict(train={"lr": 1e-3, "optimizer": "sgd", "clip_grad_norm": 1.0,
                                            "schedule": {"name": "poly", "power": 1.0, "warmup": 3, "unit": "steps"}}))
    full = run_trial(spec)

    interrupt_after_first_epoch(spec, tmp_path)
    saved = torch.load(tmp_path / "trial.pt", weights_only=True)["optimization"]
    data = load_trial_data(spec.data, spec.protocol)
    assert saved["schedulers"][0]["last_epoch"] == steps_per_epoch(data, 1) > 3
    resumed = run_trial(spec, checkpoint_dir=tmp_path)
    assert resumed.trial["resumed_from_epoch"] == 1
    assert resumed.images.equals(full.images)
    assert resumed.epochs.drop(columns="time_s").equals(full.epochs.drop(columns="time_s"))


def test_a_batch_keeps_labelled_slices_first():
    reference = torch.randn(4, 1, 8, 8)
    batch = Batch(reference.clone(), torch.zeros(4, 1, 8, 8), torch.tensor([False, True, False, True]))
    assert batch.n_labelled == 2 and batch.n_unlabelled == 2
    assert batch.labelled.tolist() == [True, True, False, False]
    assert torch.equal(batch.image, reference[[1, 3, 0, 2]])  # stable: original order within each kind
    assert torch.equal(batch.image[batch.lab], reference[[1, 3]])
    assert torch.equal(batch.image[batch.unl], reference[[0, 2]])
    moved = batch.to(torch.device("cpu"))
    assert moved.n_labelled == 2 and torch.equal(moved.image, batch.image)


@pytest.mark.parametrize("name", list_methods())
def test_training_steps_never_wait_for_a_device_value(name):
    """On a GPU, ``if mask.any()`` or ``x[mask]`` waits for the device. On the meta device
    (shapes, no values) both raise, so a step that runs there never reads a value back."""
    meta = torch.device("meta")
    method = tiny_method(name).train().to(meta)
    losses = method.training_step(tiny_batch([True, False, True]).to(meta), epoch=1)
    losses["loss"].backward()
    assert "dice" in losses and losses["loss"].device == meta
    with pytest.raises(RuntimeError, match="meta"):  # the check can fail: a branch on a value
        bool(torch.ones(2, device=meta).any())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cuda(tiny_dict, precision):
    spec = load_trial_spec(tiny_dict(train={"device": "cuda", "precision": precision, "epochs": 1, "snapshot_k": 1}))
    result = run_trial(spec)
    assert math.isfinite(result.trial["final_loss"]) and result.trial["device"].startswith("cuda")
