"""HTML rendering: one self-contained page, plotly.js inlined once, every study string escaped.

Fragments returned by this module are safe HTML; everything from the study passes through
:func:`esc` (text) or :func:`_json_for_script` (figure JSON inside a ``<script>``), so a
hostile method name can neither add markup nor close the script element.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import plotly.graph_objects as go

from mismatch.report.table_format import Table
from mismatch.report.visual import COLOURS, VisualGrid

PLOTLY_CONFIG = '{"responsive": true, "displaylogo": false}'
# A numeric cell starts with a number, a sign or a comparison ("< 0.001"); an em dash is neither.
_NUMERIC = re.compile(r"^\s*[<>\u2264\u2265+\-\u2212]?\s*\.?\d")
WIDE = 8  # tables with more columns than this get a smaller font (13 methods fit a laptop screen)


@dataclass
class Section:
    """A titled part of the page; ``body`` holds safe HTML fragments."""

    id: str
    title: str
    body: list[str] = field(default_factory=list)


def esc(text: object) -> str:
    """HTML-escape any value for element content or a quoted attribute."""
    return html.escape(str(text), quote=True)


def paragraph(text: str, cls: str = "") -> str:
    """An escaped paragraph."""
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


def bullets(items: list[str]) -> str:
    """An escaped bulleted list."""
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def text_columns(table: Table) -> set[int]:
    """Indices of the columns holding text (any cell that is neither a number nor a dash): these
    are left-aligned, numbers right-aligned. The first column (row labels) is always text."""
    out = {0}
    for i in range(1, len(table.header)):
        texts = [row[i].text for row in table.rows if i < len(row)]
        if any(t.strip() and not t.startswith("\u2014") and not _NUMERIC.match(t) for t in texts):
            out.add(i)
    return out


def _cell_html(text: str, bold: bool) -> str:
    inner = "<br>".join(esc(line) for line in text.split("\n"))  # a cell's second line (an interval)
    return f"<strong>{inner}</strong>" if bold else inner


def table_html(table: Table, link_folder: str | None = "tables", collapsed: bool = False) -> str:
    """A table with its title, notes and links to its CSV / Markdown / LaTeX files."""
    text = text_columns(table)
    head = "".join(f'<th class="text">{esc(h)}</th>' if i in text else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(table.header))
    body = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            flags = (("best", cell.bold), ("missing", cell.missing), ("text", i in text and i > 0))
            classes = " ".join(c for c, on in flags if on)
            tag = "th" if i == 0 else "td"
            content = _cell_html(cell.text, cell.bold)
            cells.append(f'<{tag} class="{classes}">{content}</{tag}>' if classes else f"<{tag}>{content}</{tag}>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    links = ""
    if link_folder:
        links = " ".join(f'<a href="{link_folder}/{esc(table.name)}.{ext}">{label}</a>'
                         for ext, label in (("csv", "CSV"), ("md", "Markdown"), ("tex", "LaTeX")))
        links = f'<div class="files">{links}</div>'
    notes = "".join(paragraph(n, "note") for n in table.notes)
    wide = ' class="wide"' if len(table.header) > WIDE else ""
    inner = (f'<div class="scroll"><table{wide}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
             f"</table></div>{notes}{links}")
    title = esc(table.title)
    if collapsed:
        return f"<details><summary>{title} ({len(table.rows)} rows)</summary>{inner}</details>"
    return f'<div class="table"><h3>{title}</h3>{inner}</div>'


def _json_for_script(fig: go.Figure) -> str:
    # plotly's JSON already escapes these; doing it here too keeps the guarantee local.
    text = fig.to_json()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def figure_html(fig: go.Figure, div_id: str, caption: str = "") -> str:
    """A figure div plus the script that draws it (plotly.js is loaded once by the page)."""
    fig_id = esc(div_id)
    script = (f"(function(){{var f={_json_for_script(fig)};"
              f"Plotly.newPlot('{fig_id}',f.data,f.layout,{PLOTLY_CONFIG});}})();")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><div id="{fig_id}" class="plot plotly-graph-div"></div><script>{script}</script>{cap}</figure>'


def visual_html(grid: VisualGrid) -> str:
    """Fig. 7 as an image table: rows are slices; image, ground truth, then one column per method."""
    head = "".join(f"<th>{esc(h)}</th>" for h in ["slice", "image", "ground truth"] + grid.columns)
    rows = []
    for key, cells in zip(grid.slices, grid.cells, strict=True):
        imgs = "".join(f'<td><img class="map" alt="{esc(key)}" src="{uri}"></td>' for uri in cells)
        rows.append(f"<tr><th>{esc(key)}</th>{imgs}</tr>")
    legend = " ".join(f'<span class="swatch" style="background:rgb{c}"></span>{esc(n)}'
                      for n, c in (("ground truth", COLOURS["gt"]), ("true positive", COLOURS["tp"]),
                                   ("false positive", COLOURS["fp"]), ("false negative", COLOURS["fn"])))
    caption = paragraph(f"Orientation: {grid.orientation}.", "note")
    return (f'<div class="legend">{legend}</div>{caption}<div class="scroll"><table class="visual"><thead><tr>{head}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


CSS = """
:root { --fg: #1d2330; --muted: #5b6473; --line: #d8dde6; --warn: #fff1d6; --best: #e7f5ea; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); }
header, main { max-width: 1360px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 18px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 34px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
section { scroll-margin-top: 64px; }
nav { position: sticky; top: 0; background: #fff; border-bottom: 1px solid var(--line); z-index: 10; }
nav div { max-width: 1360px; margin: 0 auto; padding: 6px 20px; display: flex; flex-wrap: wrap;
          gap: 4px 14px; font-size: 13px; }
nav a { color: #2456a6; text-decoration: none; }
.sub { color: var(--muted); margin: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; white-space: nowrap; }
thead th { background: #f3f5f9; text-align: center; white-space: normal; min-width: 64px; }
th.text, td.text { text-align: left; }
tbody th { text-align: left; font-weight: 600; position: sticky; left: 0; background: #fff; }
table.wide { font-size: 11px; }
table.wide th, table.wide td { padding: 2px 4px; }
td.best { background: var(--best); }
td.missing, th.missing { background: var(--warn); }
.note { color: var(--muted); font-size: 13px; margin: 4px 0; max-width: 1100px; }
.files { font-size: 13px; margin: 4px 0 12px; }
.files a { margin-right: 10px; }
figure { margin: 10px 0 18px; }
figcaption { color: var(--muted); font-size: 13px; }
.plot { width: 100%; min-height: 300px; }
img.map { width: 100%; max-width: 176px; height: auto; image-rendering: pixelated; display: block; }
table.visual { width: 100%; table-layout: fixed; }
table.visual td { padding: 2px; }
table.visual th { white-space: normal; overflow-wrap: anywhere; font-size: 12px; }
.legend { font-size: 13px; margin: 6px 0; }
.swatch { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 10px; vertical-align: middle;
          border: 1px solid #888; }
.warn { background: var(--warn); padding: 6px 10px; border-radius: 4px; }
details { margin: 8px 0; }
summary { cursor: pointer; }
"""


def page(title: str, subtitle: list[str], sections: list[Section], plotly_js: str) -> str:
    """The whole document: head (CSS, plotly.js once), navigation, sections."""
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    parts = [f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{"".join(s.body)}</section>' for s in sections]
    subs = "".join(f'<p class="sub">{esc(line)}</p>' for line in subtitle)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style>"
            f"<script>{plotly_js}</script></head><body>"
            f"<header><h1>{esc(title)}</h1>{subs}</header><nav><div>{nav}</div></nav>"
            f"<main>{''.join(parts)}</main></body></html>\n")
