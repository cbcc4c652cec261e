"""Training methods, registered by name.

Each method is a torch-free config module in :mod:`mismatch.methods.configs` (its settings
and metadata; registering it is what makes the name known) plus its torch implementation
in ``mismatch/methods/<name>.py``, imported only when the method is built. Nothing is
imported here eagerly: the names below resolve on first use (PEP 562), so validating a
spec never imports torch.
"""

from __future__ import annotations

from mismatch.registry import lazy_exports

_EXPORTS = {
    "Batch": "mismatch.methods.base",
    "Method": "mismatch.methods.base",
    "build_method": "mismatch.methods.factory",
    "list_methods": "mismatch.methods.factory",
    "method_class": "mismatch.methods.factory",
    "method_config_class": "mismatch.methods.factory",
    "register_method": "mismatch.methods.factory",
    "uses_unlabelled": "mismatch.methods.factory",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
