"""Shared fixtures: a tiny synthetic trial spec that trains in seconds on a CPU."""

from __future__ import annotations

import pytest

from mismatch.config import TrialSpec, load_trial_spec


def tiny_spec_dict(**sections) -> dict:
    """A trial on a 6-case 32x32 vessel phantom, width-4 networks, 2 epochs."""
    spec = {
        "study": "tiny",
        "data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10, "seed": 0}},
        "protocol": {"fold": 0, "unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2, "labelled_slices": 2},
        "method": {"name": "mismatch", "width": 4},
        "train": {"epochs": 2, "snapshot_k": 2, "device": "cpu", "prediction_maps": 2},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    """Every test shares one phantom cache inside pytest's temporary folder."""
    monkeypatch.setenv("MISMATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_result(tmp_path_factory):
    """The tiny trial trained once per test session, for tests that only read its rows.

    Tests must not modify it (its frames are shared); a test that needs a second run (a
    determinism or resume check) trains its own and compares with this one.
    """
    from mismatch.trial.run import run_trial

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MISMATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return run_trial(load_trial_spec(tiny_spec_dict()))


class StopTraining(Exception):
    """Raised from an epoch hook to interrupt a trial, as a killed worker would."""


@pytest.fixture
def interrupt_after_first_epoch():
    """Run a trial with checkpoints in ``checkpoint_dir`` and stop it after its first epoch."""
    from mismatch.trial.run import run_trial

    def run(spec: TrialSpec, checkpoint_dir) -> None:
        def stop(report) -> None:
            if report.epoch == 0:
                raise StopTraining

        with pytest.raises(StopTraining):
            run_trial(spec, checkpoint_dir=checkpoint_dir, on_epoch_end=stop)

    return run


@pytest.fixture
def tiny_spec() -> TrialSpec:
    return load_trial_spec(tiny_spec_dict())


@pytest.fixture
def tiny_dict():
    """The factory :func:`tiny_spec_dict` (conftest modules cannot be imported by name)."""
    return tiny_spec_dict
