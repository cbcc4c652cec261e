"""A method registered from a test module (config + implementation), with no edit to the
package, trains through the one training loop like a built-in one."""

from typing import ClassVar, Literal

import pytest
import torch

from mismatch.config import METHODS, MethodConfig, load_trial_spec
from mismatch.losses import soft_dice_loss
from mismatch.methods import Batch, Method, list_methods, method_class, register_method
from mismatch.models import build_model
from mismatch.trial.run import run_trial


class EchoConfig(MethodConfig):
    """A throwaway supervised method: soft Dice of a U-Net on the labelled slices."""

    uses_unlabelled: ClassVar[bool] = False
    reference: ClassVar[str] = "a test"

    name: Literal["echo-test"] = "echo-test"
    width: int = 4


class Echo(Method):
    config_class = EchoConfig

    def __init__(self, config: EchoConfig, in_channels: int) -> None:
        super().__init__(config, in_channels)
        self.net = build_model("unet", in_channels=in_channels, width=config.width)

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        lab = batch.labelled
        dice = soft_dice_loss(torch.sigmoid(self.net(batch.image[lab])[0]), batch.label[lab])
        return {"dice": dice, "loss": dice}


@pytest.fixture
def echo_registered():
    register_method("echo-test")(Echo)
    try:
        yield
    finally:
        METHODS.unregister("echo-test")
        EchoConfig.implementation = None


def test_a_method_registered_from_a_test_module_trains_through_run_trial(echo_registered, tiny_dict):
    assert "echo-test" in list_methods() and method_class("echo-test") is Echo
    spec = load_trial_spec(tiny_dict(method={"name": "echo-test"}))
    result = run_trial(spec)
    assert result.trial["status"] == "completed"
    assert result.trial["method"] == "echo-test"
    assert result.trial["unlabelled_slices"] == 0  # uses_unlabelled = False reached the loop
    assert len(result.images) > 0 and result.images["iou"].between(0, 1).all()
