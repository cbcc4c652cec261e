"""Static export of the report's figures for manuscripts: SVG, PDF or PNG files via kaleido.

kaleido 1.x drives an installed Chrome/Chromium (it ships none): the browser is ``$BROWSER_PATH``
if set, else the first of :data:`BROWSERS` on ``PATH``. Every figure is written with one
:class:`FigureStyle` (font family, font size in points, width in millimetres, PNG resolution), so
all figures of a manuscript match; the height keeps each figure's on-page aspect ratio.
MathJax is switched off: kaleido would otherwise load it from a CDN (no network on CI).
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

FORMATS = ("svg", "pdf", "png")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CSS_PX_PER_INCH = 96.0  # plotly's and Chrome's unit: the CSS pixel
MM_PER_INCH = 25.4
POINTS_PER_INCH = 72.0
PAGE_WIDTH_PX = 1100  # about the width a figure has on the HTML page (its height is set for this width)


class FigureExportError(RuntimeError):
    """The figures cannot be exported (no kaleido, no browser, a failed render); the message is one line."""


@dataclass(frozen=True)
class FigureStyle:
    """The manuscript template of every exported figure.

    ``width_mm``: the printed width (174 mm: a two-column journal's full text width);
    ``max_height_mm``: the tallest figure (a page's text height); ``font_pt``: the base font size
    in points (titles 1.2x); ``dpi``: PNG resolution at the printed size.
    """

    font_family: str = "Arial, Helvetica, Liberation Sans, sans-serif"
    font_pt: float = 8.0
    width_mm: float = 174.0
    max_height_mm: float = 230.0
    dpi: int = 300

    def px(self, mm: float) -> float:
        """Millimetres in CSS pixels."""
        return mm / MM_PER_INCH * CSS_PX_PER_INCH

    @property
    def font_px(self) -> float:
        """The base font size in CSS pixels."""
        return self.font_pt / POINTS_PER_INCH * CSS_PX_PER_INCH

    @property
    def png_scale(self) -> float:
        """kaleido's ``scale`` that gives ``dpi`` at the printed width."""
        return self.dpi / CSS_PX_PER_INCH


MANUSCRIPT = FigureStyle()


def find_browser() -> str:
    """The Chrome/Chromium kaleido will drive; raises FigureExportError (one line) when there is none."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise FigureExportError(f"BROWSER_PATH={env!r} is not an executable; figure export needs Chrome or Chromium")
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise FigureExportError("figure export needs Chrome or Chromium and none was found: install it "
                            "(Debian: apt-get install chromium) or set BROWSER_PATH")


def styled(fig: go.Figure, style: FigureStyle = MANUSCRIPT) -> tuple[go.Figure, int, int]:
    """A copy of ``fig`` in ``style`` and its export width and height in CSS pixels."""
    out = go.Figure(copy.deepcopy(fig.to_dict()))
    width = round(style.px(style.width_mm))
    page_height = out.layout.height or 450
    height = round(min(style.px(style.max_height_mm), page_height * width / PAGE_WIDTH_PX))
    font = {"family": style.font_family, "size": style.font_px}
    out.update_layout(font=font, title_font={**font, "size": style.font_px * 1.2}, width=width, height=height,
                      autosize=False)
    out.update_annotations(font=font)  # subplot titles
    out.update_xaxes(title_font=font, tickfont=font)
    out.update_yaxes(title_font=font, tickfont=font)
    _keep_legend_below(out, page_height, height)
    return out, width, height


def _keep_legend_below(fig: go.Figure, page_height: float, height: float) -> None:
    """A legend placed below the x-axis titles is positioned in fractions of the plot height; keep its
    gap in pixels when the height changes (see :func:`mismatch.report.figures.layout`)."""
    legend_y = fig.layout.legend.y
    if legend_y is None or legend_y >= 0:
        return
    margin = fig.layout.margin
    vertical = (margin.t or 0) + (margin.b or 0)
    gap_px = -legend_y * max(1.0, page_height - vertical)
    fig.update_layout(legend_y=-gap_px / max(1.0, height - vertical))


def export_figures(figures: dict[str, go.Figure], folder: str | Path, fmt: str,
                   style: FigureStyle = MANUSCRIPT) -> list[Path]:
    """Write every figure as ``<folder>/<name>.<fmt>`` in ``style`` (one browser for all); returns the paths.

    Raises ValueError for an unknown format, FigureExportError when kaleido or a browser is missing
    or a figure fails to render.
    """
    if fmt not in FORMATS:
        raise ValueError(f"figure format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not figures:
        return []
    browser = find_browser()
    try:
        import kaleido
    except ImportError:
        raise FigureExportError("figure export needs kaleido: pip install 'mismatch[figures]'") from None
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    jobs, paths = [], []
    for name, fig in figures.items():
        copy_, width, height = styled(fig, style)
        path = out / f"{name}.{fmt}"
        opts = {"format": fmt, "width": width, "height": height, "scale": style.png_scale if fmt == "png" else 1}
        jobs.append({"fig": copy_, "path": path, "opts": opts})
        paths.append(path)
    try:
        kaleido.write_fig_from_object_sync(jobs, kopts={"mathjax": False, "path": browser}, cancel_on_error=True)
    except Exception as err:  # kaleido's and the browser's errors have no common base
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FigureExportError(f"figure export with {browser} failed: {first}") from err
    return paths
