"""Networks of the MisMatch project: blocks, encoder, decoders, networks and their registry.

Public API: :func:`build_model`, :func:`list_models`, :func:`register_model`, and the
classes below. The registry of networks (:mod:`mismatch.models.catalog`: torch-free cards
for ``unet``, ``mm``, ``mm-a``, ``mm-b``, ``mm-c``) can be read without importing torch, so
every name here is imported lazily, on first use (PEP 562). The effective-receptive-field
tools live in :mod:`mismatch.models.erf` (not exported here).
"""

from __future__ import annotations

from mismatch.registry import lazy_exports

_EXPORTS = {
    "AttentionDecoder": "mismatch.models.decoders",
    "ConvNormAct": "mismatch.models.blocks",
    "DoubleConv": "mismatch.models.blocks",
    "Encoder": "mismatch.models.encoder",
    "EncoderDecoderNet": "mismatch.models.networks",
    "FeatureTransform": "mismatch.models.decoders",
    "NASB": "mismatch.models.blocks",
    "PASB": "mismatch.models.blocks",
    "PlainBlock": "mismatch.models.blocks",
    "TwoDecoderNet": "mismatch.models.networks",
    "UNet": "mismatch.models.networks",
    "UNetDecoder": "mismatch.models.decoders",
    "build_model": "mismatch.models.factory",
    "list_models": "mismatch.models.factory",
    "make_block": "mismatch.models.blocks",
    "network_card": "mismatch.models.factory",
    "register_model": "mismatch.models.factory",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
