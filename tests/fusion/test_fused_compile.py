"""The fused member step traces as one graph under torch.compile (bench/bench_gpu_modes.py's
fused compile and CUDA-graph rows depend on it; whether the loop compiles waits for GPU figures).

The ``aot_eager`` backend runs dynamo and AOT autograd, the two stages that failed before (a
pydantic ``model_copy`` broke the graph; a vmapped scalar left on the module failed in AOT
autograd), without inductor's minutes of code generation on a CPU.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.func import vmap

from mismatch.config import load_trial_spec
from mismatch.methods import build_method
from mismatch.trial.fused import FusedModel, MemberConfig


def _group(k: int) -> tuple[FusedModel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    spec = load_trial_spec({"data": {"synthetic": {}}, "method": {"name": "mismatch", "width": 4}})
    model = FusedModel([build_method(spec.method, 1) for _ in range(k)], {"alpha": [0.002 * (i + 1) for i in range(k)]})
    image = torch.randn(k, 2, 1, 32, 32)
    label = (torch.rand(k, 2, 1, 32, 32) > 0.9).float()
    return model, image, label


@pytest.mark.slow
def test_the_fused_member_step_compiles_as_one_graph_with_the_eager_losses():
    model, image, label = _group(3)
    member = partial(model._member_losses, n_labelled=1, epoch=0)  # of each member's 2 images
    args = (model.params, model.buffers, model.scalars, image, label)
    torch.manual_seed(1)
    eager = vmap(member, randomness="different")(*args)
    torch.manual_seed(1)
    compiled = torch.compile(vmap(member, randomness="different"), backend="aot_eager", fullgraph=True)(*args)
    assert set(compiled) == set(eager)
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-5, atol=1e-6)
    assert model.step_module.method.config is model.base_config  # no member's scalar left behind


def test_member_config_reads_the_members_scalar_and_the_base_for_the_rest():
    class Base:
        alpha, width = 0.1, 4

    config = MemberConfig(Base(), {"alpha": torch.tensor(0.5)})
    assert float(config.alpha) == 0.5 and config.width == 4
    with pytest.raises(AttributeError, match="nothing"):
        _ = config.nothing
    empty = MemberConfig.__new__(MemberConfig)  # as copy and pickle build it, before __init__
    with pytest.raises(AttributeError, match="_base"):
        _ = empty._base
