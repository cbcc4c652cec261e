"""The method registry's functions (torch-free): names, config classes, implementations.

The authority is :data:`mismatch.config.METHODS`, whose entries are the methods' strict
config classes (discovered in :mod:`mismatch.methods.configs`). A config names its torch
implementation lazily (``implementation = "module:Class"``); only :func:`method_class` and
:func:`build_method` import it, so listing and validating methods never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mismatch.config import METHODS, MethodConfig
from mismatch.registry import load_object

if TYPE_CHECKING:
    from mismatch.methods.base import Method

C = TypeVar("C", bound=type)


def register_method(name: str) -> Callable[[C], C]:
    """Class decorator registering a method under ``name`` (duplicates are a ``ValueError``).

    Decorating a :class:`MethodConfig` subclass registers it as the entry (its
    ``implementation`` names the torch class). Decorating a :class:`Method` subclass (one
    file for a plugin or a test, where importing torch is fine) registers its
    ``config_class`` with the class itself as the implementation.
    """

    def decorator(cls: C) -> C:
        if isinstance(cls, type) and issubclass(cls, MethodConfig):
            METHODS.register(name, cls)
            return cls
        if name in METHODS:
            raise ValueError(f"method {name!r} is already registered")
        config = getattr(cls, "config_class", MethodConfig)
        if config is MethodConfig or config.implementation not in (None, cls):
            raise ValueError(f"{cls.__name__}.config_class must be its own MethodConfig subclass")
        config.implementation = cls
        METHODS.register(name, config)
        return cls

    return decorator


def method_config_class(name: str) -> type[MethodConfig]:
    """The strict config class of the method registered under ``name``."""
    return METHODS.get(name)


def method_class(name: str) -> type[Method]:
    """The torch implementation of the method registered under ``name`` (imported now)."""
    implementation: Any = METHODS.get(name).implementation
    if implementation is None:
        raise ValueError(f"method {name!r} names no implementation")
    return load_object(implementation) if isinstance(implementation, str) else implementation


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.names()


def uses_unlabelled(name: str) -> bool:
    """Whether the method ``name`` trains on unlabelled slices (without importing torch)."""
    return METHODS.get(name).uses_unlabelled


def build_method(config: MethodConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> Method:
    """Instantiate the method named by ``config.name`` for ``num_classes`` classes (2: a
    binary task) on ``spatial_dims``-dimensional images (2: slices, 3: volumes).

    The binary 2D defaults are not passed on, so a plugin method whose ``__init__`` takes
    ``(config, in_channels)`` alone keeps working on binary slices.
    """
    extra: dict[str, int] = {}
    if num_classes != 2:
        extra["num_classes"] = num_classes
    if spatial_dims != 2:
        extra["spatial_dims"] = spatial_dims
    return method_class(config.name)(config, in_channels, **extra)
