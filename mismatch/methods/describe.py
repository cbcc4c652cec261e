"""What ``mismatch methods`` prints: every registered method, its reference and size."""

from __future__ import annotations

from typing import Any

from mismatch.methods.factory import build_method, list_methods, method_config_class


def describe_methods(width: int | None = 24, in_channels: int = 1) -> list[dict[str, Any]]:
    """One dict per registered method, built with its default settings at ``width`` (None: each
    method's default width).

    Keys: ``name``, ``reference``, ``model`` (the results' ``model`` column),
    ``uses_unlabelled``, ``dims`` (the spatial dims it trains on), ``params`` (parameters that run at test time, the per-trial row's
    ``params``) and ``train_params`` (every parameter the method holds while training,
    e.g. with CCT's auxiliary decoders or the mean teacher's EMA copy).
    """
    rows = []
    for name in list_methods():
        config_class = method_config_class(name)
        settings: dict[str, Any] = {"name": name}
        if width is not None and "width" in config_class.model_fields:
            settings["width"] = width
        method = build_method(config_class.model_validate(settings), in_channels)
        rows.append(
            {
                "name": name,
                "reference": method.reference,
                "model": method.model_name,
                "uses_unlabelled": method.uses_unlabelled,
                "dims": "/".join(f"{d}D" for d in config_class.spatial_dims),
                "params": method.inference_parameters(),
                "train_params": sum(p.numel() for p in method.parameters()),
            }
        )
    return rows


def format_methods(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`describe_methods` as an aligned text table."""
    lines = [f"{'method':13s} {'model':6s} {'dims':6s} {'params':>10s} {'train':>10s}  reference"]
    for r in rows:
        lines.append(f"{r['name']:13s} {r['model']:6s} {r['dims']:6s} {r['params']:>10,d} {r['train_params']:>10,d}  "
                     f"{r['reference']}")
    return "\n".join(lines)
