"""Networks of the MisMatch project: blocks, encoder, decoders, networks and their registry.

Public API: :func:`build_model`, :func:`list_models`, :func:`register_model`, and the
classes below. Importing this package only registers the built-in names (``unet``, ``mm``,
``mm-a``, ``mm-b``, ``mm-c``). The effective-receptive-field tools live in
:mod:`mismatch.models.erf` (not imported here).
"""

from mismatch.models.blocks import NASB, PASB, ConvNormAct, DoubleConv, PlainBlock, make_block
from mismatch.models.decoders import AttentionDecoder, FeatureTransform, UNetDecoder
from mismatch.models.encoder import Encoder
from mismatch.models.networks import EncoderDecoderNet, TwoDecoderNet, UNet
from mismatch.models.registry import build_model, list_models, register_model

__all__ = [
    "AttentionDecoder",
    "ConvNormAct",
    "DoubleConv",
    "Encoder",
    "EncoderDecoderNet",
    "FeatureTransform",
    "NASB",
    "PASB",
    "PlainBlock",
    "TwoDecoderNet",
    "UNet",
    "UNetDecoder",
    "build_model",
    "list_models",
    "make_block",
    "register_model",
]
