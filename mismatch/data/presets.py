"""The paper's preparation and split presets, by name, and data specs built from them.

The values live in :data:`mismatch.config.DATA_PRESETS` and
:data:`mismatch.config.PROTOCOL_PRESETS` (a spec's ``preset:`` key expands them); this
module lists them and builds the :class:`DataSpec` that ``mismatch data prepare`` and
``mismatch data check`` use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mismatch.config import DATA_PRESETS, PROTOCOL_PRESETS, DataSpec, load_data_spec

# The preset a layout gets when none is named.
DEFAULT_PRESETS = {"carve14": "carve", "brats2018": "brats", "msd": "msd"}


def data_spec_for(
    layout: str, root: str | Path, preset: str | None = None, overrides: Mapping[str, Any] | None = None
) -> DataSpec:
    """The spec of raw dataset ``root`` in ``layout``: ``preset`` (default: the layout's), then
    ``overrides`` (any DataSpec field; ``layout`` always wins over the preset's)."""
    preset = preset if preset is not None else DEFAULT_PRESETS.get(layout)
    fields = {**dict(overrides or {}), "root": str(root), "layout": layout}
    if preset is not None:
        fields["preset"] = preset
    return load_data_spec(fields, source="the command line")


def describe_presets() -> str:
    """Every data and protocol preset with its values, one per line."""
    lines = ["data presets (DataSpec `preset:`):"]
    lines += [f"  {name:10s} {_fields(values)}" for name, values in sorted(DATA_PRESETS.items())]
    lines += ["protocol presets (ProtocolSpec `preset:`):"]
    lines += [f"  {name:12s} {_fields(values)}" for name, values in sorted(PROTOCOL_PRESETS.items())]
    return "\n".join(lines)


def _fields(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items())
