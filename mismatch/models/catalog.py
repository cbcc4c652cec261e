"""Network cards: what each registered network is and provides, without importing torch.

A :class:`NetworkCard` names a network, the factory that builds it (a lazy
``"module:function"`` string, imported only by :func:`mismatch.models.build_model`), and its
capabilities: how many decoders it has, its spatial dimensions and the extra keyword arguments
its factory accepts. Method configs accept networks by capability (``requires =
{"decoders": 2}``), so a new two-decoder network is usable by MisMatch and Sup2 the moment
its card is registered. Spec validation reads these cards, never the networks themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mismatch.registry import Registry, load_object


@dataclass(frozen=True)
class NetworkCard:
    """One registered network: ``factory(in_channels, width, **accepted kwargs) -> nn.Module``.

    ``factory`` is a ``"module:function"`` string (imported on first build) or the callable.
    ``decoders``, ``spatial_dims`` and ``decoder_blocks`` (each decoder's block kind) are its
    capabilities; ``accepts`` names the extra keyword arguments its factory takes (e.g.
    ``negative_sigmoid``). ``default_width`` is the width the network is designed for (24 for
    the 2D networks as in the paper, 16 for the 3D ones as V-Net); ``mismatch models`` lists
    parameter counts at it.
    """

    name: str
    factory: str | Callable[..., Any]
    decoders: int = 1
    spatial_dims: int = 2
    accepts: tuple[str, ...] = ()
    decoder_blocks: tuple[str, ...] = ()
    description: str = field(default="", compare=False)
    default_width: int = 24

    def capabilities(self) -> dict[str, Any]:
        """What the network provides, as a method's ``requires`` names it."""
        return {"decoders": self.decoders, "spatial_dims": self.spatial_dims, "decoder_blocks": self.decoder_blocks}

    def provides(self, requires: dict[str, Any]) -> bool:
        """Whether every required capability has the required value."""
        have = self.capabilities()
        return all(have.get(key) == value for key, value in requires.items())

    def load_factory(self) -> Callable[..., Any]:
        """The factory itself (imports its module, and so torch, on first call)."""
        return load_object(self.factory) if isinstance(self.factory, str) else self.factory


#: Networks by name. The built-in cards are registered below; a plugin registers its own
#: with :func:`mismatch.models.register_model` (or ``NETWORKS.register(name, card)``).
NETWORKS: Registry[NetworkCard] = Registry("network")


def register_card(card: NetworkCard) -> NetworkCard:
    """Register ``card`` under its name (a name registered twice is a ``ValueError``)."""
    return NETWORKS.register(card.name, card)


_NETS = "mismatch.models.networks"
_SIGMOID = ("negative_sigmoid",)
for _card in (
    NetworkCard("unet", f"{_NETS}:unet", 1, decoder_blocks=("unet",), description="U-Net (Sup1, baselines' backbone)"),
    NetworkCard("mm", f"{_NETS}:mm", 2, accepts=_SIGMOID, decoder_blocks=("pasb", "nasb"), description="MisMatch"),
    NetworkCard("mm-a", f"{_NETS}:mm_a", 2, decoder_blocks=("plain", "plain"), description="ablation MM-a"),
    NetworkCard("mm-b", f"{_NETS}:mm_b", 2, accepts=_SIGMOID, decoder_blocks=("plain", "nasb"), description="ablation MM-b"),
    NetworkCard("mm-c", f"{_NETS}:mm_c", 2, decoder_blocks=("plain", "pasb"), description="ablation MM-c"),
):
    register_card(_card)

# 3D twins (spatial_dims=3): same decoders, decoder blocks and extra kwargs as the 2D cards, so
# a method asking for {"decoders": 2} gets them; the 2D -> 3D name rule is unet -> unet3d,
# mm -> mm3d, mm-x -> mm3d-x. Width 16 by default (V-Net's, see docs/models.md).
_NETS3D = "mismatch.models.networks3d"
for _card in (
    NetworkCard("unet3d", f"{_NETS3D}:unet3d", 1, 3, decoder_blocks=("unet",), default_width=16,
                description="3D U-Net (Sup1, baselines' backbone, 3D)"),
    NetworkCard("mm3d", f"{_NETS3D}:mm3d", 2, 3, accepts=_SIGMOID, decoder_blocks=("pasb", "nasb"),
                default_width=16, description="3D MisMatch"),
    NetworkCard("mm3d-a", f"{_NETS3D}:mm3d_a", 2, 3, decoder_blocks=("plain", "plain"), default_width=16,
                description="3D ablation MM-a"),
    NetworkCard("mm3d-b", f"{_NETS3D}:mm3d_b", 2, 3, accepts=_SIGMOID, decoder_blocks=("plain", "nasb"),
                default_width=16, description="3D ablation MM-b"),
    NetworkCard("mm3d-c", f"{_NETS3D}:mm3d_c", 2, 3, decoder_blocks=("plain", "pasb"), default_width=16,
                description="3D ablation MM-c"),
):
    register_card(_card)
