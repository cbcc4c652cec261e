"""Every baseline through the one training loop, twice: same rows (deterministic on CPU)."""

import json
import math

import pytest

from mismatch.config import METHODS, load_trial_spec
from mismatch.trial.run import run_trial

# every registered method but MisMatch (tests/methods/test_mismatch.py): a new method is covered
BASELINES = [name for name in METHODS.names() if name != "mismatch"]
MODEL = {"sup2": "mm", "morph": "mm-a"}


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_trains_with_the_one_loop_and_is_deterministic(name, tiny_dict):
    spec = load_trial_spec(tiny_dict(method={"name": name, "width": 4}))
    first, second = run_trial(spec), run_trial(spec)
    row = first.trial
    assert row["method"] == name and row["model"] == MODEL.get(name, "unet")
    assert row["params"] > 0 and row["infer_time_per_image_s"] > 0
    assert all(math.isfinite(v) for v in json.loads(row["final_losses_json"]).values())
    assert (row["unlabelled_slices"] == 0) == (not METHODS.get(name).uses_unlabelled)
    assert first.images.equals(second.images)
