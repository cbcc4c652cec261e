"""The GPU hot path's slices (``train.data_on_device``): batches and rows equal the NumPy path's."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mismatch.config import load_trial_spec
from mismatch.data import load_trial_data
from mismatch.trial.batches import DeviceSlices, device_slices, epoch_batches
from mismatch.trial.run import run_trial

CPU = torch.device("cpu")


def _same(a, b) -> None:
    assert a.n_labelled == b.n_labelled
    for x, y in ((a.image, b.image), (a.label, b.label), (a.labelled, b.labelled)):
        assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.parametrize("stream", ["streaming", "two-stream"])
@pytest.mark.parametrize("use_unlabelled", [True, False])
def test_device_batches_equal_the_numpy_batches(tiny_dict, stream, use_unlabelled):
    spec = load_trial_spec(tiny_dict(train={"stream": stream, "batch_size": 3, "device": "cpu"}))
    data = load_trial_data(spec.data, spec.protocol)
    slices = device_slices(data, CPU, "on")
    assert isinstance(slices, DeviceSlices) and slices.on_device
    for epoch in (0, 1):
        numpy_path = list(epoch_batches(data, epoch, spec.train, use_unlabelled))
        tensor_path = list(epoch_batches(data, epoch, spec.train, use_unlabelled, slices))
        assert len(numpy_path) == len(tensor_path) >= 1
        for a, b in zip(numpy_path, tensor_path):
            _same(a, b)


def test_auto_leaves_cpu_trials_on_the_numpy_path_and_off_is_off(tiny_spec):
    data = load_trial_data(tiny_spec.data, tiny_spec.protocol)
    assert device_slices(data, CPU, "auto") is None and device_slices(data, CPU, "off") is None


def test_a_trial_gives_the_same_rows_with_its_slices_as_tensors(tiny_dict, tiny_result):
    spec = load_trial_spec(tiny_dict(train={"data_on_device": "on"}))
    assert spec.trial_id() == load_trial_spec(tiny_dict()).trial_id()  # not part of the identity
    result = run_trial(spec)
    pd.testing.assert_frame_equal(result.images, tiny_result.images)
    pd.testing.assert_frame_equal(result.epochs.drop(columns="time_s"), tiny_result.epochs.drop(columns="time_s"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: the sync-free hot path")
def test_cuda_training_steps_do_not_synchronise(tiny_dict):
    from mismatch.methods import build_method
    from mismatch.trial.loop import train_epoch
    from mismatch.trial.members import Member, build_optimization
    from mismatch.trial.steppers import PerMemberStepper

    spec = load_trial_spec(tiny_dict(train={"device": "cuda", "check_every": 10_000, "epochs": 1}))
    data = load_trial_data(spec.data, spec.protocol)
    device = torch.device("cuda")
    method = build_method(spec.method, data.in_channels).to(device)
    optim, slices = build_optimization(method, spec, data, device), device_slices(data, device, "auto")
    assert slices is not None and slices.on_device
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call in a step raises
    try:
        stream = epoch_batches(data, 0, spec.train, method.uses_unlabelled, slices)
        batch = next(iter(stream))
        losses = method.training_step(batch, 0)
        optim.step(losses["loss"])
        method.after_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    member = Member(spec, data, method, optim, "", slices)
    assert train_epoch([member], PerMemberStepper([member], device), 0)[0]
