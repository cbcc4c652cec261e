"""Published benchmark figures (LA, ACDC) beside a study's reproduced per-case Dice, each with its
source, checkpoint rule and HD95 units (with their sources) and whether it is comparable with this
tool's protocol, labelled as published and never mixed with the study's own numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mismatch.report import published
from mismatch.report.build import build_report


def _spec(layout: str, labelled: int, split: str = "lists") -> str:
    return json.dumps({"data": {"layout": layout}, "protocol": {"split": split, "labelled_cases": labelled}})


def _trials() -> pd.DataFrame:
    rows = [("t1", "ua-mt", _spec("la2018-h5", 8)), ("t2", "ua-mt", _spec("la2018-h5", 8)),
            ("t3", "mismatch", _spec("la2018-h5", 8)), ("t4", "mismatch", _spec("msd", 8)),
            ("t5", "ua-mt", _spec("la2018-h5", 8, split="folds"))]
    out = pd.DataFrame(rows, columns=["trial_id", "method", "spec_json"])
    out["status"] = "completed"
    return out


def _cases() -> pd.DataFrame:
    dice = {"t1": (0.8, 0.9), "t2": (0.7, 0.8), "t3": (0.6, 0.6), "t4": (0.1, 0.1), "t5": (0.2, 0.2)}
    return pd.DataFrame([(t, f"c{i}", d) for t, ds in dice.items() for i, d in enumerate(ds)],
                        columns=["trial_id", "case_id", "dice"])


def test_every_figure_has_a_source_and_the_issue_values():
    values = {(r.benchmark, r.budget, r.method): r.dice for r in published.BENCHMARK_FIGURES}
    assert values == {("LA", 8, "ua-mt"): 84.25, ("LA", 16, "ua-mt"): 88.88, ("LA", 8, "MC-Net"): 87.71,
                      ("LA", 16, "MC-Net"): 90.34, ("LA", 8, "bcp"): 89.62, ("ACDC", 3, "ua-mt"): 61.0,
                      ("ACDC", 7, "ua-mt"): 81.5, ("ACDC", 3, "unimatch"): 88.9, ("ACDC", 7, "unimatch"): 89.9}
    assert all(len(r.source) > 20 for r in published.BENCHMARK_FIGURES)
    assert all("UniMatch" in r.source for r in published.BENCHMARK_FIGURES if r.benchmark == "ACDC")


def test_every_figure_has_a_selection_rule_units_and_their_sources():
    for ref in published.BENCHMARK_FIGURES:
        assert ref.selection in published.SELECTION_RULES and ref.hd95_units in published.HD95_UNITS
        assert ref.dice_units == "%"
        assert len(ref.selection_source) > 20 and len(ref.units_source) > 20
        if ref.selection != "not verified":  # a verified rule names the repository it was read from
            assert "/" in ref.selection_source and ("l." in ref.selection_source or "issue #" in ref.selection_source)
    assert set(published.SELECTION_RULES) >= {"final checkpoint", "best on validation", "best on test",
                                              "best on validation+test merged"}
    assert set(published.HD95_UNITS) >= {"mm", "voxels"}


def test_protocol_facts_read_from_the_official_code():
    refs = {(r.benchmark, r.budget, r.method): r for r in published.BENCHMARK_FIGURES}
    bcp = refs[("LA", 8, "bcp")]
    assert (bcp.selection, bcp.hd95_units) == ("best on test", "voxels")
    assert "code/LA_BCP_train.py" in bcp.selection_source and "issue #19" in bcp.selection_source
    for budget in (3, 7):
        unimatch = refs[("ACDC", budget, "unimatch")]
        assert unimatch.selection == "best on validation+test merged" and "issue #100" in unimatch.selection_source
    assert refs[("LA", 16, "ua-mt")].selection == "final checkpoint"
    assert {refs[("LA", b, "MC-Net")].selection for b in (8, 16)} == {"best on test"}


def test_bcp_la_is_flagged_not_comparable_for_its_test_set_selection():
    refs = {(r.benchmark, r.budget, r.method): r for r in published.BENCHMARK_FIGURES}
    verdict, reason = published.comparability(refs[("LA", 8, "bcp")])
    assert verdict == "no" and "best checkpoint on the test set" in reason and "HD95 in voxels" in reason
    assert published.comparability(refs[("ACDC", 3, "unimatch")])[0] == "no"
    assert published.comparability(refs[("ACDC", 3, "ua-mt")]) == ("unknown", "selection rule not verified")
    fair = published.Reference("ACDC", 3, "x", 80.0, "a source of twenty characters", "final checkpoint", "s",
                               "voxels", "u")  # ACDC here is in voxels too (acdc-h5 stores no spacing)
    assert published.comparability(fair)[0] == "yes"
    with pytest.raises(ValueError, match="unknown selection"):
        published.comparability(published.Reference("LA", 8, "x", 1.0, "s", "best of seeds", "s", "mm", "u"))


def test_benchmark_point_needs_a_benchmark_layout_and_its_lists():
    assert published.benchmark_point(_spec("la2018-h5", 16)) == ("LA", 16)
    assert published.benchmark_point(_spec("acdc-h5", 3)) == ("ACDC", 3)
    assert published.benchmark_point(_spec("acdc-h5", 3, split="folds")) is None
    assert published.benchmark_point(_spec("carve14", 1)) is None
    assert published.benchmark_point("not json") is None


def test_reproduced_dice_is_the_mean_over_trials_of_the_per_case_mean():
    out = published.reproduced_dice(_trials(), _cases()).set_index("method")
    assert set(out.index) == {"ua-mt", "mismatch"}  # t4 (msd) and t5 (folds) ran on no benchmark's lists
    assert out.loc["ua-mt", "reproduced"] == pytest.approx(80.0)  # trials 85 and 75
    assert out.loc["ua-mt", "reproduced_sd"] == pytest.approx(7.0710678)
    assert (out.loc["ua-mt", "n_trials"], out.loc["mismatch", "n_trials"]) == (2, 1)
    assert out.loc["mismatch", "reproduced"] == pytest.approx(60.0)


def test_benchmark_table_sets_published_beside_reproduced():
    table = published.benchmark_table(_trials(), _cases())
    assert table is not None and table.name == "published_benchmarks"
    assert "published (cited) Dice %" in table.header and "reproduced here Dice %" in table.header
    rows = {r[2].text: [c.text for c in r] for r in table.rows}
    assert set(rows) == {"bcp", "MC-Net", "mismatch", "ua-mt"}  # LA at 8 only: no 16-labelled or ACDC rows
    assert rows["ua-mt"][:4] == ["LA", "8 labelled volumes", "ua-mt", "84.25"]
    assert "MC-Net" in rows["ua-mt"][4] and rows["ua-mt"][8] == "80.00 \u00b1 7.07 (n = 2)"
    assert rows["mismatch"][3:5] == ["\u2014", "\u2014"] and rows["mismatch"][8] == "60.00 (n = 1)"
    assert rows["bcp"][8] == "\u2014" and "CVPR 2023" in rows["bcp"][4]
    assert any("not a comparison tested here" in n for n in table.notes)
    assert table.header[5:8] == ["selection rule", "HD95 units", "comparable?"]
    assert rows["bcp"][5:7] == ["best on test", "voxels"]
    assert rows["bcp"][7].startswith("no: best checkpoint on the test set")
    assert "issue #19" in rows["bcp"][4] and rows["mismatch"][5:8] == ["\u2014"] * 3
    protocol = next(n for n in table.notes if n.startswith("This tool's protocol"))
    assert "final checkpoint" in protocol and "Li and Qin" in protocol and "2605.25561" in protocol
    data = table.data.set_index("method")
    assert data.loc["ua-mt", "published"] == 84.25 and data.loc["ua-mt", "reproduced"] == pytest.approx(80.0)
    assert {"selection", "hd95_units", "source", "selection_source", "units_source", "comparable"} <= set(data)
    assert (data.loc["bcp", "selection"], data.loc["bcp", "comparable"]) == ("best on test", "no")


def test_no_table_without_a_benchmark():
    trials = _trials().iloc[3:4]
    assert published.benchmark_points(trials) == set()
    assert published.benchmark_table(trials, _cases()) is None
    assert published.benchmark_table(None, None) is None


def test_report_shows_the_published_table_for_a_benchmark_study(carve_study: Path, tmp_path: Path) -> None:
    plain = build_report(carve_study, tmp_path / "plain").read_text()
    assert "Published (cited) benchmark figures" not in plain
    study = Path(shutil.copytree(carve_study, tmp_path / "la-like"))
    methods = {}
    for path in (study / "trials").glob("*.parquet"):
        row = pd.read_parquet(path)
        budget = 8 if int(row["labelled_slices"].iloc[0]) == 5 else 16
        row["spec_json"] = _spec("la2018-h5", budget)
        row.to_parquet(path, index=False)
        methods[str(row["trial_id"].iloc[0])] = str(row["method"].iloc[0])
    images = pd.concat(pd.read_parquet(p) for p in (study / "images").glob("*.parquet"))
    cases = images.groupby(["trial_id", "case_id"], as_index=False)[["iou", "dice"]].mean()
    (study / "cases").mkdir()
    for trial_id, part in cases.groupby("trial_id"):
        part.to_parquet(study / "cases" / f"{trial_id}.parquet", index=False)
    index = build_report(study, tmp_path / "report")
    html = index.read_text()
    assert "Published (cited) benchmark figures beside the reproduced ones" in html
    assert "Wu et al., MC-Net, MICCAI 2021" in html and "reproduced here Dice %" in html
    csv = pd.read_csv(index.parent / "tables" / "published_benchmarks.csv")
    mismatch = csv[(csv["method"] == "mismatch") & (csv["budget"] == 8)]
    assert len(mismatch) == 1 and 0 <= mismatch["reproduced"].iloc[0] <= 100
    assert set(csv.loc[csv["published"].notna(), "method"]) == {"ua-mt", "MC-Net", "bcp"}
    bcp = csv[csv["method"] == "bcp"].iloc[0]
    assert (bcp["selection"], bcp["hd95_units"], bcp["comparable"]) == ("best on test", "voxels", "no")
    assert "comparable?" in html and "no: best checkpoint on the test set" in html
    assert "final checkpoint" in html and "Li and Qin" in html
