"""Training methods, registered by name (see :mod:`mismatch.methods.base`).

Importing this package imports every method module so that each registers itself; to add a
method, add one module here and list it in ``_METHOD_MODULES``.
"""

from __future__ import annotations

import importlib

from mismatch.methods.base import (
    Batch,
    Method,
    build_method,
    list_methods,
    method_class,
    method_config_class,
    register_method,
)

_METHOD_MODULES = ("mismatch", "sup", "mean_teacher", "fixmatch", "cct", "mta", "morph")

for _module in _METHOD_MODULES:
    importlib.import_module(f"mismatch.methods.{_module}")

__all__ = [
    "Batch",
    "Method",
    "build_method",
    "list_methods",
    "method_class",
    "method_config_class",
    "register_method",
]
