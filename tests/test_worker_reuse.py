"""A study's worker process runs one trial after another (Ray Tune reuses its actors): what a
trial sets process-wide must not carry over, and its times and peak memory are its own."""

import os

import numpy as np
import pandas as pd
import pytest
import torch

import mismatch.trial.evaluate as evaluate
from mismatch.runtime import PROC_CLEAR_REFS, peak_memory_mb, reset_peak_memory, seed_everything
from mismatch.trial.run import run_trial

CPU = torch.device("cpu")


def test_a_deterministic_trial_does_not_make_the_next_one_deterministic():
    try:
        seed_everything(0, deterministic=True, device=CPU)
        assert torch.are_deterministic_algorithms_enabled()
        seed_everything(0, deterministic=False, device=CPU)
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.skipif(not os.access(PROC_CLEAR_REFS, os.W_OK), reason="needs Linux's /proc/self/clear_refs")
def test_the_peak_memory_count_restarts_with_each_trial():
    reset_peak_memory(CPU)
    before = peak_memory_mb(CPU)
    block = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    high = peak_memory_mb(CPU)
    del block
    reset_peak_memory(CPU)
    after = peak_memory_mb(CPU)
    assert high - before > 250
    assert high - after > 250  # an earlier trial's peak is not the next trial's


def test_finished_at_comes_after_every_table_is_built(tiny_spec, monkeypatch):
    built = {}
    case_tables = evaluate.case_tables

    def timed(*args, **kwargs):
        out = case_tables(*args, **kwargs)
        built["cases"] = pd.Timestamp(evaluate.utc_now())
        return out

    monkeypatch.setattr(evaluate, "case_tables", timed)
    trial = run_trial(tiny_spec).trial
    assert pd.Timestamp(trial["finished_at"]) >= built["cases"] > pd.Timestamp(trial["started_at"])
