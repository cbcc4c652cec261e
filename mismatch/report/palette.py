"""One colour per method, shared by every figure of the report.

Known methods take a fixed colour by their place in :data:`METHOD_ORDER` (so a method keeps its
colour whatever else a study ran). Methods the list does not know take :data:`EXTRA_COLOURS` in
the order they first appear among a report's columns (so they are distinct from each other and
the same in every figure of that report; :func:`method_colour` alone picks one by name). Further
variants of one method in one figure (an alpha = 0 control, a second network) take lighter or
darker shades of the method's colour.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

from mismatch.report.design import Column

# The registered methods (and those issue 14 adds), in a fixed order; MisMatch, the reference, last.
METHOD_ORDER = ("sup1", "sup2", "mta", "mean-teacher", "fixmatch", "cct", "morph", "ua-mt", "cps", "bcp",
                "unimatch", "sup-strong", "mismatch")
# Thirteen colours that stay distinct side by side (Tableau 10 less red, navy, black, mustard); red is MisMatch's.
METHOD_COLOURS = ("#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                  "#bcbd22", "#393b79", "#000000", "#e6ab02", "#d62728")
# For methods the list does not know: distinct from the above and from each other (no greys).
EXTRA_COLOURS = ("#7b4173", "#6baed6", "#fd8d3c", "#74c476", "#9e9ac8", "#843c39", "#a55194", "#ce6dbd")
SHADES = (0.0, -0.35, 0.45, -0.6, 0.7)  # darken (< 0) or lighten (> 0) a method colour, per extra variant


def method_colour(method: str) -> str:
    """The colour of ``method``: fixed for the known methods, chosen from the name for others."""
    if method in METHOD_ORDER:
        return METHOD_COLOURS[METHOD_ORDER.index(method)]
    return EXTRA_COLOURS[zlib.crc32(method.encode("utf-8")) % len(EXTRA_COLOURS)]


def shade(colour: str, amount: float) -> str:
    """``colour`` (``#rrggbb``) mixed towards white (``amount`` > 0) or black (< 0) by ``|amount|``."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    target = 255 if amount > 0 else 0
    mixed = [round(c + (target - c) * abs(amount)) for c in rgb]
    return "#" + "".join(f"{c:02x}" for c in mixed)


def shades(colour: str, n: int) -> list[str]:
    """``n`` distinguishable shades of ``colour``, the colour itself first."""
    return [shade(colour, SHADES[i % len(SHADES)]) for i in range(n)]


def column_colours(columns: Sequence[Column]) -> dict[str, str]:
    """Column key -> colour: each method's first column in its method colour, later ones in shades."""
    return keyed_colours((c.key, c.method) for c in columns)


def keyed_colours(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Key -> colour for (key, method) pairs, in order: the n-th key of a method takes its n-th
    shade; unknown methods take :data:`EXTRA_COLOURS` in order of first appearance."""
    seen: dict[str, int] = {}
    base: dict[str, str] = {}
    out = {}
    for key, method in pairs:
        if key in out:
            continue
        if method not in base:
            unknown = sum(m not in METHOD_ORDER for m in base)
            base[method] = (method_colour(method) if method in METHOD_ORDER
                            else EXTRA_COLOURS[unknown % len(EXTRA_COLOURS)])
        k = seen.get(method, 0)
        seen[method] = k + 1
        out[key] = shade(base[method], SHADES[k % len(SHADES)])
    return out
