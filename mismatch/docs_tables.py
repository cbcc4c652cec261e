"""The docs' tables of names, generated from the registries (``python -m mismatch.docs_tables``).

Each table sits between ``<!-- registry-table: KIND -->`` and ``<!-- /registry-table -->``
in a Markdown file of ``docs/``; ``--write`` rewrites them, ``--check`` (the default) exits
with status 1 and names the files whose tables are out of date. The method table
builds every method at width 24 and the network table every network at its default width to
count parameters, so this imports torch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"(<!-- registry-table: (?P<kind>[\w-]+) -->\n)(?P<body>.*?)(<!-- /registry-table -->)", re.S)


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def methods_table() -> str:
    """Every registered method: reference, networks accepted, parameters, unlabelled loss."""
    from mismatch.config import METHODS
    from mismatch.methods.configs import networks_for
    from mismatch.methods.describe import describe_methods

    rows = []
    for row in describe_methods(width=24, in_channels=1):
        config = METHODS.get(row["name"])
        if "model" in config.model_fields:
            others = [n for n in networks_for(config.requires) if n != row["model"]]
            model = f"`{row['model']}`" + (f" (or {', '.join(f'`{n}`' for n in others)})" if others else "")
        else:
            model = f"`{row['model']}`"
        rows.append([f"`{row['name']}`", config.reference, model, f"{row['params']:,}", f"{row['train_params']:,}",
                     config.summary or "-"])
    header = ["method", "paper reference", "`model` (network at test time)", "test-time params (w=24, 1 channel)",
              "params while training", "trained on unlabelled slices"]
    return _table(header, rows)


def networks_table() -> str:
    """Every registered network: dims, decoders, block kinds, extra kwargs, parameters at its
    default width (24 in 2D, 16 in 3D)."""
    from mismatch.models import build_model
    from mismatch.models.catalog import NETWORKS

    rows = []
    for name, card in NETWORKS.items():
        net = build_model(name, in_channels=1, width=card.default_width)
        params = sum(p.numel() for p in net.parameters())
        rows.append([f"`{name}`", card.description, f"{card.spatial_dims}D", str(card.decoders),
                     ", ".join(card.decoder_blocks) or "-", ", ".join(f"`{a}`" for a in card.accepts) or "-",
                     str(card.default_width), f"{params:,}"])
    return _table(["name", "network", "dims", "decoders", "decoder blocks", "extra kwargs", "width",
                   "parameters (1 channel)"], rows)


def _value(value: Any) -> str:
    return "none" if value is None else value if isinstance(value, str) else json.dumps(value)


def _presets_table(registry: Any, what: str) -> str:
    keys = list(dict.fromkeys(k for _, values in registry.items() for k in values))
    rows = [[f"`{name}`", *(_value(values[k]) if k in values else "-" for k in keys)] for name, values in registry.items()]
    return _table([what, *keys], rows)


def data_presets_table() -> str:
    """Every data preset and the DataSpec fields it fills."""
    from mismatch.config import DATA_PRESETS

    return _presets_table(DATA_PRESETS, "data preset")


def protocol_presets_table() -> str:
    """Every protocol preset and the ProtocolSpec fields it fills (``-``: left unchanged)."""
    from mismatch.config import PROTOCOL_PRESETS

    return _presets_table(PROTOCOL_PRESETS, "protocol preset")


def layouts_table() -> str:
    """Every registered dataset layout and its description."""
    from mismatch.config import LAYOUTS

    return _table(["layout", "what it reads"], ([f"`{n}`", layout.description or "-"] for n, layout in LAYOUTS.items()))


def search_spaces_table() -> str:
    """Every registered method's search space (``mismatch search``), with the source of each range."""
    from mismatch.config import METHODS, TrainSpec
    from mismatch.search_space import method_space

    rows = []
    for name, config in METHODS.items():
        for param, dim in method_space(config).items():
            default = config.model_fields[param].default if param in config.model_fields else TrainSpec().lr
            rows.append([f"`{name}`", f"`{param}`", dim.describe(), _value(default), dim.source or "-"])
    return _table(["method", "setting", "searched over", "default", "source of the range"], rows)


TABLES: dict[str, Callable[[], str]] = {
    "methods": methods_table,
    "networks": networks_table,
    "layouts": layouts_table,
    "data-presets": data_presets_table,
    "protocol-presets": protocol_presets_table,
    "search-spaces": search_spaces_table,
}


def render(text: str, cache: dict[str, str] | None = None) -> str:
    """``text`` with every marked table regenerated."""
    cache = {} if cache is None else cache

    def fill(match: re.Match[str]) -> str:
        kind = match["kind"]
        if kind not in TABLES:
            raise KeyError(f"unknown registry table {kind!r}; known: {', '.join(TABLES)}")
        if kind not in cache:
            cache[kind] = TABLES[kind]()
        return match[1] + cache[kind] + match[4]

    return _BLOCK.sub(fill, text)


def stale_files(docs: Path = DOCS, write: bool = False) -> list[Path]:
    """The Markdown files whose tables differ from the registries (rewritten if ``write``)."""
    cache: dict[str, str] = {}
    stale = []
    for path in sorted(docs.glob("*.md")):
        text = path.read_text()
        new = render(text, cache)
        if new != text:
            stale.append(path)
            if write:
                path.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    """``--check`` (default): exit 1 naming stale files; ``--write``: regenerate them."""
    parser = argparse.ArgumentParser(prog="python -m mismatch.docs_tables", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the tables in docs/")
    args = parser.parse_args(argv)
    stale = stale_files(write=args.write)
    for path in stale:
        print(f"{'rewrote' if args.write else 'out of date'}: {path}")
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
