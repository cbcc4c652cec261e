"""Networks by name (timm style): ``@register_model(name)``, ``build_model``, ``list_models``.

A registered factory has the signature ``factory(in_channels: int, width: int, **kwargs) ->
nn.Module``. Registering a name twice is an error (big_vision style), so a typo or a clash
between two files never silently replaces a network.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ModelFactory = Callable[..., nn.Module]

_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory`` under ``name``; raises ``ValueError`` on a duplicate."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        _MODELS[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Sorted names of all registered networks."""
    return sorted(_MODELS)


def build_model(name: str, in_channels: int = 1, width: int = 24, **kwargs) -> nn.Module:
    """Build the network registered as ``name``; extra ``kwargs`` go to its factory.

    Raises ``KeyError`` naming the known networks when ``name`` is not registered.
    """
    try:
        factory = _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {list_models()}") from None
    return factory(in_channels=in_channels, width=width, **kwargs)
