"""Which trials may train fused, how groups are planned, and the masked optimiser (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mismatch.config import load_trial_spec
from mismatch.fusion.optim import AdamSettings, MaskedAdam
from mismatch.fusion.support import NOT_FUSABLE, check_group, member_scalars, plan_groups, trial_fusable
from mismatch.methods import list_methods


@pytest.fixture
def two_stream(tiny_dict):
    """A factory of tiny two-stream specs (the fusable protocol)."""
    def spec(**sections):
        sections["train"] = {"stream": "two-stream", **sections.get("train", {})}
        return load_trial_spec(tiny_dict(**sections))
    return spec


def test_every_built_in_method_is_fusable_or_says_why_not():
    assert set(NOT_FUSABLE) <= set(list_methods())
    assert set(list_methods()) - set(NOT_FUSABLE) == {"cps", "mismatch"}  # verified by the equivalence tests
    assert all(reason for reason in NOT_FUSABLE.values())


def test_a_trial_that_cannot_be_fused_says_why(two_stream, tiny_dict):
    assert trial_fusable(two_stream()) is None
    assert "two-stream" in trial_fusable(load_trial_spec(tiny_dict()))  # the paper's stream
    assert "sgd" in trial_fusable(two_stream(train={"optimizer": "sgd"}))
    assert "flip" in trial_fusable(two_stream(method={"name": "sup1", "width": 4}))


def test_members_may_differ_in_fold_seed_labels_and_alpha_only(two_stream, tiny_dict):
    members = [two_stream(protocol={"fold": f, "labelled_slices": n}, method={"alpha": a}, train={"seed": s})
               for f, n, a, s in [(0, 2, 0.002, 0), (1, 3, 0.01, 1)]]
    check_group(members)
    assert member_scalars(members) == ["alpha"]
    with pytest.raises(ValueError, match="may differ only"):
        check_group([members[0], two_stream(method={"alpha_decay_start": 3})])
    with pytest.raises(ValueError, match="cannot be fused"):
        check_group([members[0], load_trial_spec(tiny_dict())])


def test_groups_hold_at_most_k_compatible_trials_in_order(two_stream, tiny_dict):
    specs = [two_stream(protocol={"fold": f}) for f in range(5)] + [load_trial_spec(tiny_dict())]
    specs.insert(2, two_stream(train={"lr": 1e-3}))
    assert plan_groups(specs, 2) == [[0, 1], [2], [3, 4], [5], [6]]  # the lr trial and the paper stream alone
    assert plan_groups(specs, 1) == [[i] for i in range(len(specs))]


@pytest.mark.parametrize(("optimizer", "weight_decay"), [("adam", 0.0), ("adam", 0.01), ("adamw", 0.01)])
def test_masked_adam_equals_torch_adam_bit_for_bit_and_leaves_idle_members_untouched(optimizer, weight_decay):
    torch.manual_seed(0)
    lrs = np.array([1e-3, 2e-3, 5e-4])
    start = torch.randn(3, 4, 5)
    solo = [torch.nn.Parameter(start[k].clone()) for k in range(3)]
    torch_class = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    torch_adams = [torch_class([p], lr=lr, weight_decay=weight_decay) for p, lr in zip(solo, lrs)]
    stacked = start.clone()
    adam = MaskedAdam({"w": stacked}, AdamSettings(weight_decay=weight_decay, decoupled=optimizer == "adamw"))
    for t in range(12):
        grad = torch.randn(3, 4, 5)
        active = np.array([0, 2]) if t % 3 == 0 else np.arange(3)  # member 1 idles every third step
        before = {k: v["w"][1].clone() for k, v in adam.state_dict().items() if k != "steps"}
        weights, steps = stacked[1].clone(), int(adam.steps["w"][1])
        for k in active:
            solo[k].grad = grad[k].clone()
            torch_adams[k].step()
        adam.step({"w": grad}, {"w": active}, {"w": lrs})
        if len(active) < 3:  # Adam with a zero gradient would move it: the masked step must not
            assert torch.equal(stacked[1], weights) and adam.steps["w"][1] == steps
            assert all(torch.equal(adam.state_dict()[k]["w"][1], v) for k, v in before.items())
    for k in range(3):
        state = torch_adams[k].state[solo[k]]
        assert torch.equal(stacked[k], solo[k].data)
        assert torch.equal(adam.exp_avg["w"][k], state["exp_avg"])
        assert torch.equal(adam.exp_avg_sq["w"][k], state["exp_avg_sq"])
        assert adam.steps["w"][k] == int(state["step"])
    assert adam.steps["w"].tolist() == [12, 8, 12]
