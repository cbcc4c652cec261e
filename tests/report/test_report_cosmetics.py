"""The report's presentation: p-value and time formats, one colour per method, Fig. 9's fit in the
plotted units and within the data, left-aligned text columns, Fig. 7's stated orientation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest

from mismatch.report import build_report, palette
from mismatch.report.aggregate import per_trial
from mismatch.report.calibration import Scatter, fit_table
from mismatch.report.design import detect_design
from mismatch.report.figures import fit_curve
from mismatch.report.html import table_html, text_columns
from mismatch.report.load import StudyData, load_study
from mismatch.report.table_format import Cell, Table, fmt_p, fmt_small, to_markdown
from mismatch.report.visual import RADIOLOGICAL, data_uri, grey, slice_layout, transposed_for_display, visual_grid

SCIENTIFIC = re.compile(r"\de[+-]?\d")


@pytest.mark.parametrize(("p", "text"), [(0.031, "0.031"), (0.5, "0.50"), (1.0, "1.0"), (0.0042, "0.0042"),
                                         (0.001, "0.0010"), (0.000999, "< 0.001"), (9.13e-5, "< 0.001"),
                                         (float("nan"), "\u2014")])
def test_p_values_have_fixed_significant_digits(p: float, text: str) -> None:
    assert fmt_p(p) == text


def test_smallest_reachable_p_is_never_scientific_notation() -> None:
    assert fmt_small(1.08e-5) == "1.1 \u00d7 10\u207b\u2075"
    assert fmt_small(9.13e-5, 3) == "9.13 \u00d7 10\u207b\u2075"
    assert fmt_small(0.333) == "0.33"
    assert not any(SCIENTIFIC.search(fmt_small(10.0 ** -k)) for k in range(1, 12))


def test_thirteen_methods_get_thirteen_distinct_fixed_colours() -> None:
    colours = [palette.method_colour(m) for m in palette.METHOD_ORDER]
    assert len(palette.METHOD_ORDER) >= 13 and len(set(colours)) == len(colours)
    for new in ("ua-mt", "cps", "bcp", "unimatch", "sup-strong"):
        assert new in palette.METHOD_ORDER
    assert palette.method_colour("mismatch") == "#d62728"  # whatever else the study ran


def test_variants_of_one_method_get_shades_and_unknown_methods_distinct_colours() -> None:
    keyed = palette.keyed_colours([("mismatch", "mismatch"), ("MisMatch, alpha = 0", "mismatch"),
                                   ("x", "new-a"), ("y", "new-b"), ("sup1", "sup1")])
    assert keyed["mismatch"] == palette.method_colour("mismatch")
    assert keyed["MisMatch, alpha = 0"] == palette.shade("#d62728", palette.SHADES[1]) != keyed["mismatch"]
    assert keyed["x"] == palette.EXTRA_COLOURS[0] and keyed["y"] == palette.EXTRA_COLOURS[1]
    assert len(set(keyed.values())) == 5
    assert palette.shade("#808080", 1.0) == "#ffffff" and palette.shade("#808080", -1.0) == "#000000"


def _scatter() -> Scatter:
    ece = np.linspace(0.0, 0.2, 41)
    value = 0.8 - 20 * (ece - 0.05) ** 2  # a parabola that falls far below the data at high ECE if extended
    value[-1] = 0.3
    coef = np.polyfit(ece, value, 2)
    return Scatter("sup1", ece, value, np.arange(len(ece)), coef)


def test_fig9_fit_is_in_percent_and_inside_the_data() -> None:
    s = _scatter()
    x, y = fit_curve(s)
    assert min(x) == pytest.approx(0.0) and max(x) == pytest.approx(0.2)
    kept = [v for v in y if v is not None]
    assert kept and min(kept) >= s.value.min() * 100 - 1e-9 and max(kept) <= s.value.max() * 100 + 1e-9
    a, b, c = s.coef * 100
    for g, v in zip(x, y, strict=True):
        if v is not None:
            assert v == pytest.approx(a * g * g + b * g + c)


def test_fig9_fit_table_shows_percent_coefficients(hand_design) -> None:  # noqa: ANN001
    s = _scatter()
    table = fit_table([s], hand_design, 10, "foreground IoU")
    assert table.header[2:5] == ["a (% per ECE\u00b2)", "b (% per ECE)", "c (%)"]
    assert table.rows[0][4].text == f"{s.coef[2] * 100:.2f}"
    assert table.data.loc[0, "c_percent"] == pytest.approx(s.coef[2] * 100) and table.data.loc[0, "c"] == s.coef[2]
    assert "foreground IoU" in table.title and "iou" not in table.title


@pytest.fixture
def hand_design(make_rows):  # noqa: ANN001, ANN201
    rows = make_rows({("sup1", "unet", float("nan"), 10, f): [0.5, 0.6] for f in (0, 1)})
    data = StudyData("memory", rows, None, pafs.LocalFileSystem(), None)
    return detect_design(per_trial(data, "iou"))


def test_text_columns_are_left_aligned_numbers_right() -> None:
    rows = [[Cell("sup1"), Cell("mismatch better"), Cell("0.031"), Cell("< 0.001"), Cell("\u2014")],
            [Cell("cct"), Cell("\u2014"), Cell("1.0"), Cell("-2.5"), Cell("\u2014 (0/4)")]]
    table = Table("t", "t", ["baseline", "verdict", "p", "\u0394", "cell"], rows, pd.DataFrame())
    assert text_columns(table) == {0, 1}
    page = table_html(table, link_folder=None)
    assert '<th class="text">verdict</th>' in page and '<td class="text">mismatch better</td>' in page
    assert "<td>0.031</td>" in page


def test_a_cell_second_line_is_a_break_on_the_page_and_a_semicolon_in_markdown() -> None:
    table = Table("t", "t", ["n", "m"], [[Cell("5"), Cell("52.1 \u00b1 1.0\n[50.0, 54.0]")]], pd.DataFrame())
    assert "52.1 \u00b1 1.0<br>[50.0, 54.0]" in table_html(table, link_folder=None)
    assert "52.1 \u00b1 1.0; \\[50.0, 54.0\\]" in to_markdown(table)


def test_nifti_slices_are_transposed_and_the_orientation_stated(carve_study: Path) -> None:
    assert slice_layout(json.dumps({"data": {"layout": "msd"}})) == "msd" and slice_layout("{bad") is None
    assert transposed_for_display("msd") and transposed_for_display("brats2018")
    assert not transposed_for_display("carve14") and not transposed_for_display(None)
    data = load_study(carve_study)
    trials = per_trial(data, "iou")
    design = detect_design(trials)
    stored = visual_grid(data, trials, design, 10)
    assert stored is not None and "as stored" in stored.orientation
    trials["spec_json"] = json.dumps({"data": {"layout": "msd"}})
    turned = visual_grid(data, trials, design, 10)
    assert turned is not None and turned.orientation == RADIOLOGICAL
    with np.load(carve_study / "predictions" / f"{turned.trials[design.reference.key]}.npz") as npz:
        image = npz["image"][0]
    assert not np.array_equal(image, image.T)  # the check below could fail
    assert turned.cells[0][0] == data_uri(grey(image.T)) and stored.cells[0][0] == data_uri(grey(image))


def test_report_times_in_ms_and_no_scientific_p_values(carve_study: Path, tmp_path: Path) -> None:
    index = build_report(carve_study, tmp_path / "report", max_points=50)
    page = index.read_text()
    assert "Infer. time (ms)" in page and "<td>4.2</td>" in page and "Infer. time (s)" not in page
    for name in ("table3_pvalues", "table3_runs"):
        table = pd.read_csv(tmp_path / "report" / "tables" / f"{name}.csv")
        assert len(table)
        md = (tmp_path / "report" / "tables" / f"{name}.md").read_text()
        assert not SCIENTIFIC.search(md), md
    assert re.search(r"Holm-adjusted run-level p = [01]\.\d+ on \d paired runs, 5 cases", page)
