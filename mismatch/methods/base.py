"""The method interface (torch).

A method turns a batch into a dict of losses (the ``"loss"`` key is what the loop
backpropagates; every other entry is logged) and an image into a probability map. The one
training loop (:func:`mismatch.trial.run.run_trial`) only calls this interface. The registry
(names, config classes, lazy implementations) is torch-free: :mod:`mismatch.methods.factory`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mismatch.config import MethodConfig, TrainSpec
from mismatch.losses import out_channels_for, probabilities
from mismatch.models import build_model
from mismatch.models.catalog import NETWORKS
from mismatch.optim import OptimizerSetup, build_optimizer, build_scheduler


@dataclass
class Batch:
    """One step's slices from the streaming sampler, labelled slices first.

    ``image`` is (B, C, H, W) (3D: (B, C, D, H, W) patches); ``label`` is (B, 1, H, W) float
    holding class indices, 0/1 for a binary task (zeros for unlabelled slices); ``labelled``
    is a (B,) bool mask telling which slices carry a label. The first ``n_labelled`` slices
    are the labelled ones, so a method selects them with the Python slices :attr:`lab` and
    :attr:`unl` and branches on the Python ints ``n_labelled`` / :attr:`n_unlabelled`: no
    step waits for the device to answer a question about the mask. The sampler passes
    ``n_labelled``; a batch built without it counts the mask and, if the labelled slices do
    not come first, reorders the slices (stably) so that they do.
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
    (with :meth:`build_net`, which gives them the trial's classes and dimensions) and
    implement :meth:`training_step` and :meth:`predict_proba`.

    ``num_classes`` is the task's C (2 for a binary task: networks then have one output
    channel read through a sigmoid, exactly as before multi-class support; C > 2: C channels
    and a softmax). ``spatial_dims`` is 2 (slices) or 3 (volumes); the config class's
    ``spatial_dims`` says which the method supports.
    """

    config_class: type[MethodConfig] = MethodConfig

    def __init__(self, config: MethodConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__()
        supported = getattr(type(config), "spatial_dims", (2,))
        if spatial_dims not in supported:
            raise ValueError(f"method {config.name!r} supports {' and '.join(f'{d}D' for d in supported)} "
                             f"data only, not {spatial_dims}D")
        self.config = config
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.out_channels = out_channels_for(num_classes)
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
        """Registry name of the network used at test time (results' ``model`` column; in 3D
        the 3D name, e.g. ``mm3d`` for ``model: mm``)."""
        return network_for_dims(str(getattr(self.config, "model", "unet")), self.spatial_dims)

    @property
    def alpha(self) -> float:
        """Consistency weight for the results' ``alpha`` column (NaN if the method has none)."""
        return float(getattr(self.config, "alpha", float("nan")))

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """Losses for one batch; must contain ``"loss"`` (the value to backpropagate)."""
        raise NotImplementedError

    def build_net(self, name: str = "unet", width: int | None = None, **options: Any) -> nn.Module:
        """The network ``name`` for this trial's classes and dimensions.

        In 3D the name follows :func:`network_for_dims` (``unet -> unet3d``, ``mm-a ->
        mm3d-a``); ``width`` defaults to the config's; ``options`` reach the network only if
        its card accepts them (:func:`network_options`).
        """
        name = network_for_dims(name, self.spatial_dims)
        card_dims = NETWORKS.get(name).spatial_dims
        if card_dims != self.spatial_dims:
            raise ValueError(f"network {name!r} is {card_dims}D but this trial's data is {self.spatial_dims}D")
        width = self.config.width if width is None else width
        return build_model(name, in_channels=self.in_channels, width=width, out_channels=self.out_channels,
                           **network_options(name, **options))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities of logits: sigmoid (binary, one channel) or softmax over classes."""
        return probabilities(logits)

    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Probabilities for images (B, C_in, *spatial), in eval mode: the foreground
        probability (B, 1, *spatial) for a binary task, else the class probabilities
        (B, C, *spatial), summing to 1 over dim 1.

        By default the prediction of ``self.net``, the network a method tests with (for a
        two-decoder network, the mean of its decoders' probabilities).
        """
        return self.net.probabilities(image)

    def decoder_probabilities(self, image: torch.Tensor) -> list[torch.Tensor] | None:
        """Each decoder's probability (as :meth:`predict_proba`), for networks with several.

        For such methods :meth:`predict_proba` must be the mean of these (the loop then gets
        both from one pass); ``None`` for single-decoder methods.
        """
        net = getattr(self, "net", None)
        if net is None or getattr(net, "num_decoders", 1) < 2:
            return None
        return [probabilities(logits) for logits in net(image)]

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


def network_for_dims(name: str, spatial_dims: int) -> str:
    """The registered name of network ``name`` for ``spatial_dims``: 2D names are returned
    as they are; in 3D a 2D name gains ``3d`` after its stem (``unet -> unet3d``, ``mm ->
    mm3d``, ``mm-x -> mm3d-x``) unless its card is already a 3D one."""
    if spatial_dims == 2 or (name in NETWORKS and NETWORKS.get(name).spatial_dims == spatial_dims):
        return name
    stem, sep, rest = name.partition("-")
    return f"{stem}{spatial_dims}d{sep}{rest}"
