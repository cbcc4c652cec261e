"""End-to-end: build reports from study folders and merged files; escaping; options; no torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mismatch.report import build_report
from mismatch.report.build import ReportOptions
from mismatch.report.table_format import Cell, Table, tex_escape, to_latex, to_markdown

TABLES = ("table1_main", "table3_pvalues", "table4_alpha", "decoder_ablation_5", "fig8_reliability",
          "fig9_ece_fit", "missing_cells", "failed_trials", "trials", "provenance")


@pytest.fixture(scope="module")
def built(carve_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(carve_study, tmp_path_factory.mktemp("report"), max_points=5)


def test_writes_index_and_every_table(built: Path) -> None:
    assert built.name == "index.html"
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (built.parent / "tables" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    html = built.read_text()
    assert html.count("<script>") == 1 + html.count("Plotly.newPlot(")  # plotly.js inlined exactly once
    body = html.split("</head>", 1)[1]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", body)  # works offline: nothing fetched
    for section in ("Table III", "Fig. 5", "Table IV", "Fig. 6", "Fig. 8", "Fig. 9", "Fig. 7", "What is missing",
                    "Hyper-parameter search (Optuna)", "Objective against method.alpha"):
        assert section in html
    assert "study alpha-search: 6 trials, 6 complete" in html


def test_hostile_names_are_escaped_everywhere(built: Path, hostile: dict[str, str]) -> None:
    html = built.read_text()
    body = html.split("</head>", 1)[1]
    for raw in (hostile["method"], hostile["model"], "<img src=x"):
        assert raw not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body  # shown, as text
    scripts = re.findall(r"<script>(.*?)</script>", body, flags=re.S)
    assert all("Plotly.newPlot(" in s for s in scripts)  # no script element was injected or cut short
    md = (built.parent / "tables" / "table1_main.md").read_text()
    assert "\\<script\\>" in md and "<script>" not in md
    tex = (built.parent / "tables" / "table1_main.tex").read_text()
    assert r"\textless{}script\textgreater{}" in tex


def test_latex_and_markdown_escaping_of_commands(hostile: dict[str, str]) -> None:
    table = Table("t", hostile["latex"], ["a|b", "c"], [[Cell(hostile["latex"]), Cell("x", bold=True)]], pd.DataFrame())
    tex = to_latex(table)
    assert r"\input" not in tex and r"\textbackslash{}input\{/etc/passwd\}\$\&\_\%\#" in tex
    assert tex_escape("~^") == r"\textasciitilde{}\textasciicircum{}"
    md = to_markdown(table)
    assert "| a\\|b | c |" in md and "**x**" in md


def test_table_cells_trace_to_csv(built: Path) -> None:
    cells = pd.read_csv(built.parent / "tables" / "table1_main.csv")
    trials = pd.read_csv(built.parent / "tables" / "trials.csv")
    row = cells[(cells["column"] == "sup1") & (cells["labelled_slices"] == 10)].iloc[0]
    sel = trials[(trials["method"] == "sup1") & (trials["labelled_slices"] == 10)]
    assert row["mean"] == pytest.approx(sel.groupby("fold")["mean_iou"].mean().mean(), abs=1e-4)
    assert row["n"] == 4 and row["expected"] == 4


def test_failed_trials_listed_and_incomplete_cells_marked(built: Path) -> None:
    failed = pd.read_csv(built.parent / "tables" / "failed_trials.csv")
    assert len(failed) == 2 and set(failed["model"]) == {"mm-c"}
    assert failed["error"].str.contains("out of memory").all()
    decoder = (built.parent / "tables" / "decoder_ablation_5.md").read_text()
    assert "(2/4)" in decoder


def test_scatter_is_downsampled_and_labelled(built: Path) -> None:
    html = built.read_text()
    assert "DOWNSAMPLED" in html and "Downsampled for display" in html
    fits = pd.read_csv(built.parent / "tables" / "fig9_ece_fit.csv")
    assert (fits["points_shown"] == 5).all() and (fits["images"] == 24).all()


def test_fit_coefficients_match_polyfit(carve_study: Path, built: Path) -> None:
    images = pd.read_parquet(carve_study / "images")
    trials = pd.read_csv(built.parent / "tables" / "trials.csv")
    ids = trials[(trials["method"] == "sup1") & (trials["labelled_slices"] == 10)]["trial_id"]
    sel = images[images["trial_id"].isin(ids)]
    expected = np.polyfit(sel["ece"], sel["iou"], 2)
    fits = pd.read_csv(built.parent / "tables" / "fig9_ece_fit.csv").set_index("column")
    np.testing.assert_allclose(fits.loc["sup1", ["a", "b", "c"]].to_numpy(float), expected, rtol=1e-9)


def test_merged_parquet_degrades_gracefully(carve_study: Path, tmp_path: Path) -> None:
    merged = tmp_path / "merged.parquet"
    pd.read_parquet(carve_study / "images").to_parquet(merged)
    index = build_report(merged, tmp_path / "out", metric="mean_dice_2class", mwu_alternative="greater",
                         mwu_method="asymptotic")
    html = index.read_text()
    assert "failed trials cannot be known" in html and "absent (merged per-image file)" in html
    assert "Published Table I (CARVE) for comparison" in html  # shown for the authors' metric only
    pvalues = pd.read_csv(tmp_path / "out" / "tables" / "table3_pvalues.csv")
    assert set(pvalues["mwu_method"]) == {"asymptotic"} and set(pvalues["mwu_alternative"]) == {"greater"}


def test_options_are_validated(carve_study: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metric"):
        build_report(carve_study, tmp_path, metric="accuracy")
    with pytest.raises(ValueError, match="counts: 5, 10"):
        build_report(carve_study, tmp_path, at=100)
    with pytest.raises(TypeError):
        build_report(carve_study, tmp_path, colour="red")
    ReportOptions(mwu_alternative="less").validate()


def test_default_out_dir_is_reports_study(carve_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    index = build_report(carve_study, at=5, visual_slices=0)
    assert index.resolve() == (tmp_path / "reports" / "carve-like" / "index.html").resolve()


def test_report_never_imports_torch(carve_study: Path, tmp_path: Path) -> None:
    code = ("import sys, mismatch.report as r; r.build_report(sys.argv[1], sys.argv[2]); "
            "import json; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' "
            "or m.startswith('mismatch.trial'))))")
    out = subprocess.run([sys.executable, "-c", code, str(carve_study), str(tmp_path)],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("case", ["one-method", "one-trial", "mostly-failed", "brats-like"])
def test_degenerate_studies_still_build(case: str, tmp_path: Path) -> None:
    from tests.synthetic_study import SyntheticGrid, write_synthetic_study

    nan = float("nan")
    grids = {
        "one-method": (SyntheticGrid((("sup1", "unet", nan),), counts=(5,), replicates=(0, 1), images_per_trial=3), 0),
        "one-trial": (SyntheticGrid((("mismatch", "mm", 0.002),), counts=(5,), replicates=(0,), images_per_trial=1), 0),
        "mostly-failed": (SyntheticGrid((("sup1", "unet", nan), ("mismatch", "mm", 0.002)), counts=(5, 10),
                                        replicates=(0, 1), images_per_trial=3), 7),
        "brats-like": (SyntheticGrid((("mismatch", "mm", 0.002), ("mean-teacher", "unet", nan)),
                                     counts=(3100, 4650, 6200), replicates=(0, 1, 2), images_per_trial=3,
                                     axis="unlabelled_slices", replicate="seed"), 0),
    }
    grid, failed = grids[case]
    study = write_synthetic_study(tmp_path / "storage", grid, failed=failed, predictions=case != "one-method")
    html = build_report(study, tmp_path / "out").read_text()
    assert "Tables I/II" in html and "What is missing" in html
    if case == "one-method":
        assert "no tests" in html
    if case == "brats-like":
        assert "unlabelled slices" in html and "per-seed" in html
