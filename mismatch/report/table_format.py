"""The report's table type and its writers: CSV (numbers), Markdown and LaTeX (display).

A :class:`Table` carries display cells (what the page, Markdown and LaTeX show) and a tidy
numeric frame (what the CSV holds), so that every displayed number can be traced back.
Every string is escaped for the format it is written in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Cell:
    """One displayed cell; ``bold`` marks the best of a row, ``missing`` an incomplete value. A
    newline in ``text`` starts a second line on the page (``; `` in Markdown and LaTeX)."""

    text: str
    bold: bool = False
    missing: bool = False


@dataclass
class Table:
    """A titled table: ``header`` and ``rows`` of display cells, ``data`` for the CSV."""

    name: str
    title: str
    header: list[str]
    rows: list[list[Cell]]
    data: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def fmt_num(value: float, scale: float = 1.0, digits: int = 2) -> str:
    """A fixed-point number, or an em dash for NaN."""
    if value is None or not math.isfinite(value):
        return "\u2014"
    return f"{value * scale:.{digits}f}"


def fmt_sci(value: float, digits: int = 1) -> str:
    """Short scientific notation (4.1e-3, the paper's style), or an em dash for NaN."""
    if value is None or not math.isfinite(value):
        return "\u2014"
    mantissa, exponent = f"{value:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


P_FLOOR = 0.001  # p-values below it are shown as "< 0.001"
_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def _fixed(value: float, digits: int) -> str:
    decimals = max(0, digits - 1 - math.floor(math.log10(value)))
    return f"{value:.{decimals}f}"


def fmt_p(p: float, digits: int = 2) -> str:
    """A p-value in fixed notation with ``digits`` significant digits (0.031, 0.50, 1.0), or
    ``< 0.001`` below :data:`P_FLOOR`; an em dash for NaN. Never scientific notation."""
    if p is None or not math.isfinite(p):
        return "\u2014"
    if p < P_FLOOR:
        return f"< {P_FLOOR:g}"
    return _fixed(p, digits)


def fmt_small(value: float, digits: int = 2) -> str:
    """A small positive number (a smallest reachable p-value) with ``digits`` significant digits:
    fixed notation down to 0.001, then ``1.1 \u00d7 10\u207b\u2075``; an em dash for NaN."""
    if value is None or not math.isfinite(value):
        return "\u2014"
    if value == 0 or value >= P_FLOOR:
        return _fixed(value, digits) if value else "0"
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa} \u00d7 10{str(int(exponent)).translate(_SUPERSCRIPT)}"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|<>#])")
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
                "|": r"\textbar{}", "\u00b1": r"$\pm$", "\u2014": "---", "\u03b1": r"$\alpha$"}


def md_escape(text: str) -> str:
    """Backslash-escape Markdown's active characters (and turn newlines into spaces)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text).replace("\n", " "))


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters, so a study name cannot inject commands."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text).replace("\n", " "))


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown: a heading, the table (best cells in bold) and the notes."""
    def cell(c: Cell) -> str:
        text = md_escape(c.text.replace("\n", "; "))
        return f"**{text}**" if c.bold else text

    lines = [f"### {md_escape(table.title)}", "",
             "| " + " | ".join(md_escape(h) for h in table.header) + " |",
             "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    lines += [""] + [md_escape(n) for n in table.notes]
    return "\n".join(lines).rstrip() + "\n"


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment; best cells in \\textbf, notes below as a footnote block."""
    def cell(c: Cell) -> str:
        text = tex_escape(c.text.replace("\n", "; "))
        return rf"\textbf{{{text}}}" if c.bold else text

    spec = "l" + "r" * (len(table.header) - 1)
    lines = [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{tex_escape(table.title)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(tex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines += [r"\par\smallskip\footnotesize"] + [tex_escape(n) + r"\par" for n in table.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(table: Table, folder: Path) -> dict[str, Path]:
    """Write ``<name>.csv`` (numbers), ``.md`` and ``.tex`` into ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"{table.name}.{ext}" for ext in ("csv", "md", "tex")}
    table.data.to_csv(paths["csv"], index=False)
    paths["md"].write_text(to_markdown(table), encoding="utf-8")
    paths["tex"].write_text(to_latex(table), encoding="utf-8")
    return paths
