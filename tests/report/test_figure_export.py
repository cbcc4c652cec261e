"""``mismatch report --figures``: every figure of the page as an SVG/PDF/PNG file in one manuscript style.

Needs kaleido and Debian's ``chromium`` (kaleido 1.x drives an installed browser); skipped when
either is absent. The list of exported files is kept in ``$MISMATCH_ARTIFACTS/exported-figures.txt``.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mismatch.report import build_report
from mismatch.report.export import MANUSCRIPT, FigureExportError, export_figures, find_browser, styled

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SVG_NS = "{http://www.w3.org/2000/svg}"


def _needs_export() -> None:
    pytest.importorskip("kaleido")
    if not os.environ.get("BROWSER_PATH") and not os.path.exists(CHROMIUM):
        pytest.skip("chromium not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def exported(carve_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The carve-like study's report with its figures as SVG, built once for the module."""
    _needs_export()
    out = tmp_path_factory.mktemp("report-figures")
    build_report(carve_study, out, figures="svg", max_points=50)
    return out


@pytest.mark.slow  # drives Chromium through kaleido: CI runs it; the developer loop leaves it out
def test_every_figure_of_the_page_is_exported(exported: Path) -> None:
    files = sorted(p.name for p in (exported / "figures").iterdir())
    page = (exported / "index.html").read_text(encoding="utf-8")
    ids = sorted(f"{i}.svg" for i in _figure_ids(page))
    assert files == ids and len(files) >= 6, (files, ids)
    assert {"fig5.svg", "fig8.svg", "fig9.svg", "rank-stability.svg", "optuna-0.svg"} <= set(files)
    assert (exported / "tables").is_dir() and any((exported / "tables").glob("*.tex"))
    artifacts = Path(os.environ.get("MISMATCH_ARTIFACTS", exported))
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "exported-figures.txt").write_text(
        "".join(f"figures/{f}\t{(exported / 'figures' / f).stat().st_size}\n" for f in files), encoding="utf-8")


def _figure_ids(page: str) -> list[str]:
    import re

    return re.findall(r'<div id="([^"]+)" class="plot plotly-graph-div">', page)


@pytest.mark.slow
def test_svg_parses_with_manuscript_size_and_font(exported: Path) -> None:
    path = exported / "figures" / "fig5.svg"
    assert path.stat().st_size > 5_000
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG_NS}svg"
    width = round(MANUSCRIPT.px(MANUSCRIPT.width_mm))
    assert float(root.get("width")) == width == 658  # 174 mm at 96 px per inch
    text = path.read_text(encoding="utf-8")
    assert "Arial" in text and "font-size: 10.6" in text.replace("px", "")  # 8 pt = 10.67 CSS px
    assert "fold 0" in text  # the panels' titles are drawn, not left to a browser


@pytest.mark.slow
def test_png_and_pdf_have_their_format_and_size(exported: Path, tmp_path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[0.4, 0.6, 0.5], name="mismatch"))
    fig.update_layout(height=460, title="a figure")
    png, pdf = (export_figures({"fig": fig}, tmp_path, fmt)[0] for fmt in ("png", "pdf"))
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    _, w_px, h_px = styled(fig)
    assert (width, height) == (round(w_px * MANUSCRIPT.png_scale), round(h_px * MANUSCRIPT.png_scale))
    assert abs(width - 174 / 25.4 * 300) < 2  # 174 mm at 300 dpi (2055 px)
    assert png.stat().st_size > 10_000
    data = pdf.read_bytes()
    assert data[:5] == b"%PDF-" and b"%%EOF" in data[-64:] and len(data) > 3_000


def test_style_keeps_the_legend_gap_in_pixels() -> None:
    import plotly.graph_objects as go

    from mismatch.report.figures import LEGEND_GAP_PX, layout

    fig = go.Figure(go.Scatter(y=[1, 2]))
    fig.update_layout(**layout(560))
    out, _, height = styled(fig)
    plot = height - out.layout.margin.t - out.layout.margin.b
    assert out.layout.legend.y == pytest.approx(-LEGEND_GAP_PX / plot)
    assert fig.layout.width is None  # the page's figure is untouched


def test_a_missing_browser_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chrome"))
    with pytest.raises(FigureExportError, match="BROWSER_PATH") as err:
        find_browser()
    assert "\n" not in str(err.value)


def test_cli_reports_a_missing_browser_in_one_line(carve_study: Path, tmp_path: Path) -> None:
    env = {**os.environ, "BROWSER_PATH": str(tmp_path / "no-chrome")}
    run = subprocess.run([sys.executable, "-m", "mismatch", "report", str(carve_study), "--out", str(tmp_path / "r"),
                          "--figures", "pdf", "--max-points", "20"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0 and run.stderr.startswith("error: BROWSER_PATH=")
    assert (tmp_path / "r" / "index.html").is_file() and not (tmp_path / "r" / "figures").exists()


def test_an_unknown_format_is_refused(carve_study: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="svg, pdf, png"):
        build_report(carve_study, tmp_path, figures="eps")
