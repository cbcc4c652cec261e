"""Method configs: one torch-free module per method, each registering its config class.

The config class is THE registry entry of a method (:data:`mismatch.config.METHODS`): its
fields are the method's settings (validated strictly when a spec loads) and its class
variables the method's metadata, including the torch implementation as a lazy
``"module:Class"`` string. Every module of this package is imported on the first method
lookup, so a new method's config file registers itself with no list to edit.

:class:`NetworkChoice` is the base of configs with a ``model`` field: the name is checked
against the network registry, and the network must provide the method's ``requires``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import field_validator

from mismatch.config import METHODS, MethodConfig
from mismatch.models.catalog import NETWORKS

#: Default std of the Gaussian input noise of every baseline (images are z-scored).
NOISE_STD = 0.1


def register_config(name: str) -> Any:
    """Class decorator registering a method's config class under ``name`` (duplicates are
    a ``ValueError``)."""
    return METHODS.register(name)


def networks_for(requires: dict[str, Any]) -> list[str]:
    """Names of the registered networks that provide ``requires``."""
    return [name for name, card in NETWORKS.items() if card.provides(requires)]


class NetworkChoice(MethodConfig):
    """Base of a method config whose ``model`` field names a registered network.

    Subclasses declare ``model: str = "<default>"`` and ``requires``; an unknown name is an
    error with a did-you-mean hint, and a network lacking a required capability is an error
    listing the networks that fit.
    """

    requires: ClassVar[dict[str, Any]] = {}

    @field_validator("model", check_fields=False)
    @classmethod
    def _network_fits(cls, model: str) -> str:
        card = NETWORKS.get(model)
        if not card.provides(cls.requires):
            wanted = ", ".join(f"{k}={v}" for k, v in cls.requires.items())
            raise ValueError(f"network {model!r} lacks what this method requires ({wanted}); "
                             f"networks that have it: {', '.join(networks_for(cls.requires))}")
        return model
