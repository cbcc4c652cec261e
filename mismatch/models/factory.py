"""Networks by name (timm style): ``@register_model(name)``, ``build_model``, ``list_models``.

The authority is :data:`mismatch.models.catalog.NETWORKS`, a registry of torch-free cards;
a card's factory has the signature ``factory(in_channels: int, width: int, out_channels: int = 1,
**kwargs) -> nn.Module`` and is imported only when a network is built. Registering a name twice is an
error (big_vision style), so a typo or a clash between two files never silently replaces a
network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mismatch.models.catalog import NETWORKS, NetworkCard, register_card

if TYPE_CHECKING:
    from torch import nn

ModelFactory = Callable[..., "nn.Module"]


def register_model(
    name: str,
    *,
    decoders: int = 1,
    spatial_dims: int = 2,
    accepts: tuple[str, ...] = (),
    decoder_blocks: tuple[str, ...] = (),
    description: str = "",
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory`` under ``name`` with its capabilities (a card);
    raises ``ValueError`` on a duplicate."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        register_card(NetworkCard(name, factory, decoders, spatial_dims, accepts, decoder_blocks, description))
        return factory

    return decorator


def list_models() -> list[str]:
    """Sorted names of all registered networks."""
    return NETWORKS.names()


def network_card(name: str) -> NetworkCard:
    """The card of ``name``; an unknown name is a :class:`~mismatch.registry.UnknownNameError`."""
    return NETWORKS.get(name)


def build_model(
    name: str, in_channels: int = 1, width: int = 24, out_channels: int = 1, **kwargs: Any
) -> nn.Module:
    """Build the network registered as ``name``; extra ``kwargs`` go to its factory.

    ``out_channels`` is the number of logits per pixel: 1 (the default: a binary task's
    foreground logit) or C (a C-class task). It reaches the factory only when it is not 1, so
    a plugin factory written before multi-class support still builds binary networks.
    Raises :class:`~mismatch.registry.UnknownNameError` (a ``KeyError``) naming the known
    networks when ``name`` is not registered.
    """
    if out_channels != 1:
        kwargs["out_channels"] = out_channels
    return network_card(name).load_factory()(in_channels=in_channels, width=width, **kwargs)
