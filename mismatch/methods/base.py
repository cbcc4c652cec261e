"""The method interface (torch).

A method turns a batch into a dict of losses (the ``"loss"`` key is what the loop
backpropagates; every other entry is logged) and an image into a probability map. The one
training loop (:func:`mismatch.train.run_trial`) only calls this interface. The registry
(names, config classes, lazy implementations) is torch-free: :mod:`mismatch.methods.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mismatch.config import MethodConfig, TrainSpec
from mismatch.methods.registry import (  # noqa: F401  (re-exported: the registry's old home)
    build_method,
    list_methods,
    method_class,
    method_config_class,
    register_method,
)
from mismatch.models.catalog import NETWORKS
from mismatch.optim import OptimizerSetup, build_optimizer, build_scheduler


@dataclass
class Batch:
    """One step's slices from the streaming sampler, labelled slices first.

    ``image`` is (B, C, H, W); ``label`` is (B, 1, H, W) float in {0, 1} (zeros for unlabelled
    slices); ``labelled`` is a (B,) bool mask telling which slices carry a label. The first
    ``n_labelled`` slices are the labelled ones, so a method selects them with the Python
    slices :attr:`lab` and :attr:`unl` and branches on the Python ints ``n_labelled`` /
    :attr:`n_unlabelled`: no step waits for the device to answer a question about the mask.
    The sampler passes ``n_labelled``; a batch built without it counts the mask and, if the
    labelled slices do not come first, reorders the slices (stably) so that they do.
    """

    image: torch.Tensor
    label: torch.Tensor
    labelled: torch.Tensor
    n_labelled: int | None = None

    def __post_init__(self) -> None:
        if self.n_labelled is not None:
            return
        mask = self.labelled.cpu()
        order = torch.argsort((~mask).to(torch.uint8), stable=True)  # labelled first
        if not torch.equal(order, torch.arange(len(order))):
            order = order.to(self.image.device)
            self.image, self.label, self.labelled = self.image[order], self.label[order], self.labelled[order]
        self.n_labelled = int(mask.sum())

    @property
    def n_unlabelled(self) -> int:
        """How many slices carry no label."""
        return self.image.shape[0] - self.n_labelled

    @property
    def lab(self) -> slice:
        """Selects the labelled slices of any (B, ...) tensor of this batch: ``x[batch.lab]``."""
        return slice(0, self.n_labelled)

    @property
    def unl(self) -> slice:
        """Selects the unlabelled slices of any (B, ...) tensor of this batch: ``x[batch.unl]``."""
        return slice(self.n_labelled, None)

    def to(self, device: torch.device) -> Batch:
        """The same batch on ``device``."""
        return Batch(self.image.to(device), self.label.to(device), self.labelled.to(device), self.n_labelled)


DEFAULT_EPOCHS = TrainSpec().epochs


class Method(nn.Module):
    """Base class of training methods.

    Subclasses set ``config_class`` (the :class:`MethodConfig` subclass registered under the
    method's name, which also carries its metadata), build their networks in ``__init__``
    and implement :meth:`training_step` and :meth:`predict_proba`.
    """

    config_class: type[MethodConfig] = MethodConfig

    def __init__(self, config: MethodConfig, in_channels: int) -> None:
        super().__init__()
        self.config = config
        self.in_channels = in_channels
        # The run's length in epochs, for ramps that span the whole run; configure_optimizers sets it.
        self.run_epochs = DEFAULT_EPOCHS

    @property
    def uses_unlabelled(self) -> bool:
        """False for supervised-only methods: the loop then streams the labelled slices alone."""
        return type(self.config).uses_unlabelled

    @property
    def reference(self) -> str:
        """One-line literature reference, shown by ``mismatch methods``."""
        return type(self.config).reference

    @property
    def model_name(self) -> str:
        """Registry name of the network used at test time (results' ``model`` column)."""
        return str(getattr(self.config, "model", "unet"))

    @property
    def alpha(self) -> float:
        """Consistency weight for the results' ``alpha`` column (NaN if the method has none)."""
        return float(getattr(self.config, "alpha", float("nan")))

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Losses for one batch; must contain ``"loss"`` (the value to backpropagate)."""
        raise NotImplementedError

    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Foreground probability (B, 1, H, W) for images (B, C, H, W), in eval mode.

        By default the prediction of ``self.net``, the network a method tests with (for a
        two-decoder network, the mean of its decoders' probabilities).
        """
        return self.net.probabilities(image)

    def decoder_probabilities(self, image: torch.Tensor) -> list[torch.Tensor] | None:
        """Each decoder's foreground probability (B, 1, H, W), for networks with several.

        For such methods :meth:`predict_proba` must be the mean of these (the loop then gets
        both from one pass); ``None`` for single-decoder methods.
        """
        net = getattr(self, "net", None)
        if net is None or getattr(net, "num_decoders", 1) < 2:
            return None
        return [torch.sigmoid(logits) for logits in net(image)]

    def decoder_names(self) -> list[str]:
        """Names of the decoders of :meth:`decoder_probabilities` (their block kind if known)."""
        decoders = getattr(getattr(self, "net", None), "decoders", [])
        return [str(getattr(d, "block", f"decoder{i}")) for i, d in enumerate(decoders)]

    def after_step(self) -> None:
        """Hook called after each optimiser step (e.g. an EMA teacher update)."""

    def param_groups(self, train: TrainSpec) -> list[dict[str, Any]]:
        """Parameter groups of the default optimiser (``torch.optim`` style dicts).

        Default: one group of every trainable parameter at ``train.lr``. Override for, e.g.,
        a head learning rate: ``[{"params": encoder}, {"params": head, "lr": 10 * train.lr}]``
        (a group without ``lr`` or ``weight_decay`` uses the spec's).
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self, train: TrainSpec, steps_per_epoch: int) -> list[OptimizerSetup]:
        """The optimisers the loop steps after every backward pass, each with its schedule.

        Default: one ``train.optimizer`` over :meth:`param_groups` with ``train.schedule``.
        Override to train parts with different optimisers (each optimiser's parameters must
        be disjoint); build schedules with :func:`mismatch.optim.build_scheduler`. Also records
        ``train.epochs`` as :attr:`run_epochs`.
        """
        self.run_epochs = train.epochs
        optimizer = build_optimizer(self.param_groups(train), train)
        return [OptimizerSetup(optimizer, build_scheduler(optimizer, train.schedule, train.epochs, steps_per_epoch))]

    def inference_parameters(self) -> int:
        """Parameters of the network used at test time (``self.net``; training-only parts such
        as auxiliary decoders are not counted)."""
        net = getattr(self, "net", self)
        return sum(p.numel() for p in net.parameters())


def network_options(model: str, **options: Any) -> dict[str, Any]:
    """The ``options`` that network ``model``'s factory accepts (its card says which), so a
    method setting such as ``negative_sigmoid`` reaches only the networks that have it."""
    accepts = NETWORKS.get(model).accepts
    return {key: value for key, value in options.items() if key in accepts}
