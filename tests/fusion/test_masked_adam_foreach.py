"""MaskedAdam's foreach path against its per-tensor path and torch's Adam / AdamW (fast).

On a CPU both paths and both torch implementations (``foreach=True``: ``_multi_tensor_adam``,
``foreach=False``: ``_single_tensor_adam``) agree bit for bit, so every comparison here is
``torch.equal``. The CUDA test (skipped without a GPU) pins the foreach path to
``Adam(foreach=True)`` bit for bit: the same foreach kernels in the same order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mismatch.fusion.optim import AdamSettings, MaskedAdam

K = 3
SHAPES = {"conv": (4, 2, 3, 3), "bias": (4,), "linear": (5, 7)}
LRS = np.array([1e-3, 2e-3, 5e-4])
SETTINGS = [("adam", 0.0), ("adam", 0.01), ("adamw", 0.01)]


def _active(t: int) -> np.ndarray:
    """Member 1 idles every third step, member 2 every fourth: step counts drift apart."""
    return np.array([k for k in range(K) if not (k == 1 and t % 3 == 0) and not (k == 2 and t % 4 == 1)])


def _stacked(seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn((K, *s), generator=gen).to(device) for n, s in SHAPES.items()}


def _grads(t: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + t)
    return {n: torch.randn((K, *s), generator=gen).to(device) for n, s in SHAPES.items()}


def _masked(optimizer: str, weight_decay: float, foreach: bool, device: str = "cpu",
            same_shape: bool | None = None) -> MaskedAdam:
    settings = AdamSettings(weight_decay=weight_decay, decoupled=optimizer == "adamw")
    adam = MaskedAdam(_stacked(device=device), settings, foreach=foreach)
    if same_shape is not None:  # CUDA's per-member scalar tensors, checked on a CPU too
        adam._same_shape_scalars = same_shape
    return adam


def _step(adam: MaskedAdam, t: int, lrs: np.ndarray = LRS) -> np.ndarray:
    active = _active(t)
    grads = _grads(t, adam.params["bias"].device.type)
    adam.step(grads, {n: active for n in SHAPES}, {n: lrs for n in SHAPES})
    return active


def _torch_members(optimizer: str, weight_decay: float, foreach: bool, device: str = "cpu"):
    """Each member's parameters and its own torch optimiser."""
    start = _stacked(device=device)
    torch_class = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    params = [{n: torch.nn.Parameter(start[n][k].clone()) for n in SHAPES} for k in range(K)]
    optims = [torch_class(list(params[k].values()), lr=float(LRS[k]), weight_decay=weight_decay, foreach=foreach)
              for k in range(K)]
    return params, optims


def _torch_step(params, optims, t: int, device: str = "cpu") -> None:
    grads = _grads(t, device)
    for k in _active(t):
        for n, p in params[k].items():
            p.grad = grads[n][k].clone()
        optims[k].step()


def _assert_equals_torch(adam: MaskedAdam, params, optims) -> None:
    for k in range(K):
        for n, p in params[k].items():
            state = optims[k].state[p]
            assert torch.equal(adam.params[n][k], p.detach())
            assert torch.equal(adam.exp_avg[n][k], state["exp_avg"])
            assert torch.equal(adam.exp_avg_sq[n][k], state["exp_avg_sq"])
            assert adam.steps[n][k] == int(state["step"])


def _state(adam: MaskedAdam, k: int) -> list:
    """Member k's weights, moments and step counts (copies)."""
    return [(adam.params[n][k].clone(), adam.exp_avg[n][k].clone(), adam.exp_avg_sq[n][k].clone(),
             int(adam.steps[n][k])) for n in SHAPES]


def _same(a: list, b: list) -> bool:
    return all(torch.equal(x, y) for ta, tb in zip(a, b) for x, y in zip(ta[:3], tb[:3])) and \
        [t[3] for t in a] == [t[3] for t in b]


@pytest.mark.parametrize(("optimizer", "weight_decay"), SETTINGS)
@pytest.mark.parametrize("torch_foreach", [True, False])
@pytest.mark.parametrize("same_shape", [False, True])
def test_foreach_path_equals_torch_adam_per_member_and_leaves_idle_members_untouched(
        optimizer, weight_decay, torch_foreach, same_shape):
    adam = _masked(optimizer, weight_decay, foreach=True, same_shape=same_shape)
    params, optims = _torch_members(optimizer, weight_decay, torch_foreach)
    for t in range(10):
        before = [_state(adam, k) for k in range(K)]
        active = _step(adam, t)
        _torch_step(params, optims, t)
        for k in set(range(K)) - set(active.tolist()):  # Adam with a zero gradient would move it
            assert _same(_state(adam, k), before[k])
        for k in active:
            assert not _same(_state(adam, k), before[k])
    _assert_equals_torch(adam, params, optims)
    assert adam.steps["conv"].tolist() == [10, 6, 7]  # the idlers have fewer steps


def _assert_same_state(a: MaskedAdam, b: MaskedAdam) -> None:
    """Weights, both moments and step counts bit-identical, tensor by tensor."""
    for n in SHAPES:
        assert torch.equal(a.params[n], b.params[n])
        assert torch.equal(a.exp_avg[n], b.exp_avg[n])
        assert torch.equal(a.exp_avg_sq[n], b.exp_avg_sq[n])
        assert a.steps[n].tolist() == b.steps[n].tolist()


@pytest.mark.parametrize(("optimizer", "weight_decay"), SETTINGS)
def test_foreach_and_per_tensor_paths_agree_bit_for_bit(optimizer, weight_decay):
    fast, reference = _masked(optimizer, weight_decay, True), _masked(optimizer, weight_decay, False)
    for t in range(8):
        _step(fast, t)
        _step(reference, t)
    _assert_same_state(fast, reference)


def test_members_with_different_step_counts_each_get_their_own_bias_correction():
    """After member 1 idles, all three step at one lr with step counts (3, 2, 3): the members
    share a tensor but not their scalars, so each member's row is updated with its own."""
    adam = _masked("adam", 0.0, foreach=True)
    params, optims = _torch_members("adam", 0.0, foreach=True)
    same_lr = np.full(K, 1e-3)
    for optim in optims:
        optim.param_groups[0]["lr"] = 1e-3
    grads = [_grads(t) for t in range(3)]
    for t, active in enumerate([np.arange(K), np.array([0, 2]), np.arange(K)]):
        adam.step(grads[t], {n: active for n in SHAPES}, {n: same_lr for n in SHAPES})
        for k in active:
            for n, p in params[k].items():
                p.grad = grads[t][n][k].clone()
            optims[k].step()
    assert adam.steps["bias"].tolist() == [3, 2, 3]
    _assert_equals_torch(adam, params, optims)


def test_the_foreach_step_updates_whole_tensors_or_runs_of_stepping_members():
    """One entry per stacked tensor when every member steps (torch's own call when they share
    one lr and step count); else a view per run of consecutive stepping members."""
    adam = _masked("adam", 0.0, foreach=True)
    everyone = {n: np.arange(K) for n in SHAPES}
    assert [run for _, _, run in adam._plan(_grads(0), everyone)] == [(0, K)] * 3
    plan = adam._plan(_grads(1), {**everyone, "bias": np.array([2, 0]), "linear": np.array([0, 1])})
    assert [(name, run) for name, _, run in plan] == [("conv", (0, 3)), ("bias", (0, 1)), ("bias", (2, 3)),
                                                      ("linear", (0, 2))]
    assert adam.steps["bias"].tolist() == [2, 1, 2] and adam.steps["linear"].tolist() == [2, 2, 1]


def test_tensors_stepping_different_members_in_one_step():
    """A step may mask tensors differently (a parameter without gradient for some members)."""
    fast, reference = _masked("adamw", 0.01, True), _masked("adamw", 0.01, False)
    masks = {"conv": np.arange(K), "bias": np.array([1]), "linear": np.array([], dtype=np.int64)}
    untouched = fast.params["linear"].clone()
    for adam in (fast, reference):
        adam.step(_grads(0), masks, {n: LRS for n in SHAPES})
    assert torch.equal(fast.params["linear"], untouched) and fast.steps["linear"].tolist() == [0, 0, 0]
    assert fast.steps["bias"].tolist() == [0, 1, 0]
    for n in SHAPES:
        assert torch.equal(fast.params[n], reference.params[n])
        assert torch.equal(fast.exp_avg_sq[n], reference.exp_avg_sq[n])


@pytest.mark.parametrize("resume_foreach", [True, False])
def test_state_dict_round_trip_resumes_identically(resume_foreach):
    uninterrupted = _masked("adamw", 0.01, foreach=True)
    for t in range(4):
        _step(uninterrupted, t)
    saved = {n: p.clone() for n, p in uninterrupted.params.items()}
    state = {k: {n: v.clone() for n, v in d.items()} for k, d in uninterrupted.state_dict().items()}
    resumed = MaskedAdam(saved, uninterrupted.settings, foreach=resume_foreach)
    resumed.load_state_dict(state)
    assert all(resumed.steps[n].tolist() == uninterrupted.steps[n].tolist() for n in SHAPES)
    for t in range(4, 8):
        _step(uninterrupted, t)
        _step(resumed, t)
    _assert_same_state(resumed, uninterrupted)


def test_foreach_defaults_to_cuda_only_and_can_be_chosen():
    stacked = _stacked()
    assert MaskedAdam(stacked, AdamSettings()).foreach is False  # CPU tensors: torch's default too
    assert MaskedAdam(stacked, AdamSettings(), foreach=True).foreach is True
    if torch.cuda.is_available():
        assert MaskedAdam(_stacked(device="cuda"), AdamSettings()).foreach is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("optimizer", "weight_decay"), SETTINGS)
def test_on_cuda_the_foreach_path_equals_torch_foreach_adam(optimizer, weight_decay):
    """Shared scalars (every member steps, one lr): torch's own foreach calls, bit for bit.
    Per-member scalars (idlers, own lrs): CUDA's addcdiv rounds ``s * (m / d)``, the path
    ``(s * m) / d``: within 1e-6 (a bias correction off by one step moves a weight ~1e-4)."""
    shared = _masked(optimizer, weight_decay, foreach=True, device="cuda")
    params, optims = _torch_members(optimizer, weight_decay, foreach=True, device="cuda")
    for optim in optims:
        optim.param_groups[0]["lr"] = 1e-3
    for t in range(6):
        grads = _grads(t, "cuda")
        shared.step(grads, {n: np.arange(K) for n in SHAPES}, {n: np.full(K, 1e-3) for n in SHAPES})
        for k in range(K):
            for n, p in params[k].items():
                p.grad = grads[n][k].clone()
            optims[k].step()
    _assert_equals_torch(shared, params, optims)
    own = _masked(optimizer, weight_decay, foreach=True, device="cuda")
    params, optims = _torch_members(optimizer, weight_decay, foreach=True, device="cuda")
    for t in range(6):
        _step(own, t)
        _torch_step(params, optims, t, "cuda")
    for k in range(K):
        for n, p in params[k].items():
            assert torch.allclose(own.params[n][k], p.detach(), rtol=0, atol=1e-6)
            assert torch.allclose(own.exp_avg_sq[n][k], optims[k].state[p]["exp_avg_sq"], rtol=0, atol=1e-6)
