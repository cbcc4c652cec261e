"""Intervals, reachable p-values, per-case pairing, verdicts, degenerate warning, rank stability."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest

from mismatch.report import build_report, comparison
from mismatch.report import uncertainty as unc
from mismatch.report.build import ReportOptions, make_context
from mismatch.report.cases import SOURCE_CASES, SOURCE_COUNTS, SOURCE_MEANS, from_counts
from mismatch.report.load import StudyData, load_study
from mismatch.report.significance import pvalue_table
from mismatch.report.stats import holm
from mismatch.stats import power as pw
from mismatch.stats import runlevel as rl

NAN = float("nan")
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "schema_v1"


def _context(images: pd.DataFrame, **options: object):  # noqa: ANN202 - a sections.Context
    data = StudyData("memory", images, None, pafs.LocalFileSystem(), None)
    return make_context(data, ReportOptions(**options))


def _study(make_rows, values: dict[tuple[str, int], dict[str, float]]) -> pd.DataFrame:  # noqa: ANN001
    """Image rows from {(method, fold): {case_id: iou}}: one image per case, 10 labelled slices."""
    rows = []
    for (method, fold), cases in values.items():
        model, alpha = ("mm", 0.002) if method == "mismatch" else ("unet", NAN)
        part = make_rows({(method, model, alpha, 10, fold): list(cases.values())})
        part["case_id"] = list(cases)
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


# --- bootstrap intervals ---------------------------------------------------------------------------------

def test_stratified_interval_covers_the_known_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 80, 320):
        values = rng.normal(0.6, 0.1, n)
        ci = unc.stratified_interval(values, np.arange(n) % 4)
        assert ci.low < 0.6 < ci.high, (n, ci)
        assert ci.low < ci.estimate < ci.high and ci.n == n
        widths.append(ci.high - ci.low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4, rel=0.3)  # ~ 1 / sqrt(n)


def test_stratified_interval_coverage_is_near_95_percent() -> None:
    rng = np.random.default_rng(1)
    intervals = [unc.stratified_interval(x, np.arange(60) % 3, n_resamples=500)
                 for x in rng.normal(0.6, 0.1, (200, 60))]
    covered = [ci.low < 0.6 < ci.high for ci in intervals]
    assert 0.88 <= np.mean(covered) <= 0.99


def test_stratified_interval_is_seeded_and_keeps_strata() -> None:
    values, folds = np.r_[np.zeros(5), np.ones(5)], np.r_[np.zeros(5), np.ones(5)]
    ci = unc.stratified_interval(values, folds)
    # every resample keeps five 0s and five 1s: a pooled bootstrap would not give a zero-width interval
    assert (ci.estimate, ci.low, ci.high) == (0.5, 0.5, 0.5)
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    assert unc.stratified_interval(x, np.arange(30) % 3) == unc.stratified_interval(x, np.arange(30) % 3)


def test_single_case_folds_have_no_interval() -> None:
    ci = unc.stratified_interval([0.4, 0.6], [0, 1])
    assert ci.estimate == pytest.approx(0.5) and np.isnan(ci.low) and np.isnan(ci.high)


# --- Holm and reachable p-values ------------------------------------------------------------------------

def test_holm_on_hand_computed_pvalues() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_smallest_reachable_p_values() -> None:
    assert unc.min_p_mann_whitney(2, 2) == pytest.approx(1 / 3)  # 2 / C(4, 2)
    assert unc.min_p_mann_whitney(10, 10) == pytest.approx(2 / 184756)  # the published 10 vs 10: 1.08e-5
    assert unc.min_p_mann_whitney(2, 2, "greater") == pytest.approx(1 / 6)
    assert unc.min_p_wilcoxon(5) == pytest.approx(0.0625)  # 2 / 2^5
    assert unc.min_p_wilcoxon(10) == pytest.approx(2 / 2 ** 10)
    assert np.isnan(unc.min_p_wilcoxon(1))


def test_minimum_p_note_on_a_two_fold_design(make_rows) -> None:  # noqa: ANN001
    values = {(m, mo, a, 10, f): [v + 0.1 * f] for (m, mo, a, v) in
              (("sup1", "unet", NAN, 0.4), ("mismatch", "mm", 0.002, 0.7)) for f in (0, 1)}
    ctx = _context(make_rows(values))
    table = pvalue_table(ctx.trials, ctx.design, 10)
    note = next(n for n in table.notes if n.startswith("Smallest p-value"))
    assert "Mann-Whitney 2 vs 2 folds: 0.33" in note
    assert table.data["mwu_min_p"].iloc[0] == pytest.approx(1 / 3)
    assert table.data["mwu_p"].iloc[0] >= table.data["mwu_min_p"].iloc[0]


# --- per-case pairing and verdicts ----------------------------------------------------------------------

def test_runs_are_paired_by_split_and_cases_nest_in_runs(make_rows) -> None:  # noqa: ANN001
    values = {("sup1", 0): {"a": 0.5, "b": 0.4}, ("sup1", 1): {"a": 0.3, "c": 0.6},
              ("mismatch", 0): {"a": 0.7, "b": 0.5}, ("mismatch", 1): {"a": 0.6, "c": 0.65}}
    ctx = _context(_study(make_rows, values))
    assert ctx.cases.source == SOURCE_MEANS  # hand rows carry no pixel counts
    row = ctx.comparisons.iloc[0]
    assert row["runs"] == 2 and row["cases"] == 3 and row["run_case_units"] == 4
    assert row["mean_ref"] == pytest.approx(np.mean([0.6, 0.625]))  # mean over runs of the run's case mean
    assert row["mean_baseline"] == pytest.approx(np.mean([0.45, 0.45]))
    assert row["diff"] == pytest.approx(np.mean([np.mean([0.2, 0.1]), np.mean([0.3, 0.05])]))
    assert row["min_p"] == pytest.approx(2 / 2 ** 2)  # two paired runs: the exact sign-flip test's floor
    assert row["verdict"] == rl.NOT_SEPARATED  # every case favours MisMatch, yet 2 runs cannot decide
    assert "cannot reach p < 0.05/1" in comparison.verdict_text(row) and "6 pairs" in comparison.verdict_text(row)


def _verdict_rows(make_rows, shift: float, folds: int = 8):  # noqa: ANN001, ANN202
    rng = np.random.default_rng(3)
    base = {f: dict(zip([f"f{f}c{i}" for i in range(6)], rng.uniform(0.3, 0.6, 6), strict=True))
            for f in range(folds)}
    values = {}
    for f, cases in base.items():
        values[("sup1", f)] = cases
        values[("mismatch", f)] = {c: v + shift + 0.01 * i for i, (c, v) in enumerate(cases.items())} \
            if shift else dict(cases)
    return _context(_study(make_rows, values)).comparisons.iloc[0]


def test_verdict_wording_on_constructed_inputs(make_rows) -> None:  # noqa: ANN001
    better = _verdict_rows(make_rows, 0.2)
    assert better["verdict"] == rl.BETTER == "better"
    assert better["runs"] == 8 and better["cases"] == 48
    assert better["run_p"] == pytest.approx(2 / 2 ** 8) and better["diff_ci_low"] > 0
    same = _verdict_rows(make_rows, 0.0)
    assert same["verdict"] == rl.NOT_SEPARATED == "not separated"
    worse = _verdict_rows(make_rows, -0.3)
    assert worse["verdict"] == rl.WORSE == "worse" and worse["diff_ci_high"] < 0
    one = _verdict_rows(make_rows, 0.2, folds=1)
    assert one["verdict"] == rl.NO_VERDICT and np.isnan(one["diff_ci_low"])  # one trained model per method


def test_not_separated_carries_the_mdd_and_the_seeds_that_would_decide(make_rows) -> None:  # noqa: ANN001
    rng = np.random.default_rng(5)
    values = {}
    for f in range(8):  # a real but noisy gap: run effects of +-3 points around +1
        cases = {f"f{f}c{i}": v for i, v in enumerate(rng.uniform(0.3, 0.6, 6))}
        values[("sup1", f)] = cases
        effect = 0.01 + rng.normal(0, 0.03)
        values[("mismatch", f)] = {c: v + effect for c, v in cases.items()}
    row = _context(_study(make_rows, values)).comparisons.iloc[0]
    assert row["verdict"] == rl.NOT_SEPARATED
    assert row["mdd"] == pytest.approx(pw.mdd(row["run_diff_sd"], 8), rel=1e-9) and row["mdd"] > abs(row["diff"])
    seeds = row["seeds_to_decide"]
    need = pw.pairs_for(abs(row["diff"]), row["run_diff_sd"], max_pairs=comparison.MAX_PAIRS)
    assert row["runs_per_seed"] == 8  # one more seed adds one run per fold
    assert (seeds == np.ceil(need / 8)) if need else np.isnan(seeds)


def test_verdict_needs_both_the_run_test_and_the_interval() -> None:
    assert rl.run_verdict(0.01, 0.02, 0.1, 8) == rl.BETTER
    assert rl.run_verdict(0.01, -0.01, 0.1, 8) == rl.NOT_SEPARATED  # interval crosses 0
    assert rl.run_verdict(0.2, 0.02, 0.1, 8) == rl.NOT_SEPARATED  # test not significant after Holm
    assert rl.run_verdict(0.01, -0.1, -0.02, 8) == rl.WORSE
    assert rl.run_verdict(NAN, 0.02, 0.1, 8) == rl.NOT_SEPARATED
    assert rl.run_verdict(0.01, 0.02, 0.1, 1) == rl.NO_VERDICT


def test_degenerate_threshold_and_flag() -> None:
    assert unc.degenerate([0.01, 0.049], "iou") and not unc.degenerate([0.01, 0.06], "iou")
    assert unc.degenerate_threshold("dice") == pytest.approx(2 * 0.05 / 1.05)
    assert not unc.degenerate([np.nan], "iou")


def test_degenerate_warning_on_the_page(make_rows, tmp_path: Path) -> None:  # noqa: ANN001
    values = {(m, mo, a, n, f): [0.01 + 0.005 * f, 0.02] for (m, mo, a) in
              (("sup1", "unet", NAN), ("mismatch", "mm", 0.002)) for n in (5, 10) for f in (0, 1, 2)}
    path = tmp_path / "low.parquet"
    make_rows(values).to_parquet(path)
    html = build_report(path, tmp_path / "low").read_text()
    assert "WARNING: every method&#x27;s foreground IoU is below 5.0%" in html
    healthy = {k: [0.6, 0.7] for k in values}
    make_rows(healthy).to_parquet(path)
    assert "WARNING: every method" not in build_report(path, tmp_path / "ok").read_text()


# --- rank stability -------------------------------------------------------------------------------------

def test_rank_first_counts_wins_over_resamples() -> None:
    cases = pd.DataFrame({"fold": [0, 0, 0, 1, 1, 1], "case_id": list("abcdef")})
    units = {"sup1": cases.assign(value=[0.5] * 6), "mismatch": cases.assign(value=[0.9] * 6),
             "tie": cases.assign(value=[0.9] * 6)}
    ranks = unc.rank_first(units, n_resamples=200).set_index("column")
    assert ranks.loc["sup1", "p_first"] == 0.0
    assert ranks.loc["mismatch", "p_first"] == ranks.loc["tie", "p_first"] == pytest.approx(0.5)  # ties share
    assert ranks.loc["sup1", "mean_rank"] == 3.0 and ranks["cases"].iloc[0] == 6


# --- sources and end-to-end -----------------------------------------------------------------------------

def test_case_values_from_summed_counts() -> None:
    images = pd.DataFrame({"trial_id": ["t"] * 3, "case_id": ["a", "a", "b"], "tp": [10, 0, 0],
                           "fp": [5, 5, 0], "fn": [0, 5, 0], "tn": [85, 90, 100]})
    iou = from_counts(images, "iou")
    assert iou[("t", "a")] == pytest.approx(10 / 25)  # summed counts, not the mean of per-image IoUs
    assert iou[("t", "b")] == 1.0  # empty truth and empty prediction: the schema's perfect score
    assert from_counts(images, "dice")[("t", "a")] == pytest.approx(20 / 35)


def test_report_shows_intervals_case_tests_and_ranks(carve_study: Path, tmp_path: Path) -> None:
    index = build_report(carve_study, tmp_path / "r", max_points=5)
    html = index.read_text()
    for text in ("Summary: what separates the methods", "Rank stability", "95% CI of \u0394 (runs x cases)",
                 "resample runs with replacement, then test cases within each drawn run",
                 "exact two-sided paired permutation (sign-flip) test", "Smallest p-value this design can reach",
                 "Training runs and test cases: where the variance comes from", "Every trained model at"):
        assert text in html, text
    assert html.index("Summary: what separates") < html.index("Tables I/II")
    main = pd.read_csv(index.parent / "tables" / "table1_main.csv")
    assert main["ci_low"].notna().all() and (main["ci_low"] <= main["ci_high"]).all()
    runs = pd.read_csv(index.parent / "tables" / "table3_runs.csv")
    assert set(runs["verdict"]) <= {rl.BETTER, rl.NOT_SEPARATED, rl.WORSE, rl.NO_VERDICT}
    assert (runs["cases"] == 5).all()  # synthetic trials test case0..case4 in every fold: 5 distinct cases
    components = pd.read_csv(index.parent / "tables" / "variance_components.csv")
    assert ((components["run_share"] >= 0) & (components["run_share"] <= 1)).all()


def test_cases_table_is_preferred(carve_study: Path, tmp_path: Path) -> None:
    study = Path(shutil.copytree(carve_study, tmp_path / "with-cases"))
    images = pd.concat(pd.read_parquet(p) for p in (study / "images").glob("*.parquet"))
    cases = images.groupby(["trial_id", "case_id"], as_index=False)[["iou", "dice"]].mean()
    cases["iou"] = 0.5  # distinguishable from anything the images would give
    (study / "cases").mkdir()
    for trial_id, part in cases.groupby("trial_id"):
        part.to_parquet(study / "cases" / f"{trial_id}.parquet", index=False)
    data = load_study(study)
    ctx = make_context(data, ReportOptions())
    assert ctx.cases.source == SOURCE_CASES
    assert (ctx.cases.frame["value"] == 0.5).all()
    two_class = make_context(load_study(study, "mean_dice_2class"), ReportOptions(metric="mean_dice_2class"))
    assert two_class.cases.source == SOURCE_COUNTS  # the cases table has no two-class mean Dice


def test_report_builds_on_the_version_1_fixture(tmp_path: Path) -> None:
    html = build_report(FIXTURE, tmp_path / "v1").read_text()
    assert "Summary: what separates the methods" in html
    ctx = make_context(load_study(FIXTURE), ReportOptions())
    assert ctx.cases is not None and ctx.cases.source == SOURCE_COUNTS
    assert set(ctx.cases.frame["label_draw"]) == {0}


def test_the_summary_says_when_the_design_cannot_decide(make_rows) -> None:  # noqa: ANN001
    from mismatch.report.sections import training_runs_caveat

    two = _context(_study(make_rows, {(m, f): {"a": 0.5 + 0.1 * (m == "mismatch")} for m in ("sup1", "mismatch")
                                      for f in (0, 1)}))
    text = training_runs_caveat(two.comparisons, two.design, 10)
    assert "2 paired runs give a run-level p of at least 0.50" in text and "at least 6 paired runs" in text
    one = _context(_study(make_rows, {(m, 0): {"a": 0.5 + 0.1 * (m == "mismatch")} for m in ("sup1", "mismatch")}))
    assert training_runs_caveat(one.comparisons, one.design, 10).startswith("No verdict: each method has one")
