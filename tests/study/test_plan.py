"""`mismatch study plan`: design facts, pilot-measured variances, and power checked by simulation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from mismatch.cli import main
from mismatch.stats.runlevel import sign_flip_pvalues
from mismatch.study.plan import plan_study
from mismatch.study.trials import load_study
from tests.study.runs_helpers import CASES, exact_runs, write_runs

STUDY = {
    "name": "plan-demo",
    "storage": "runs",
    "base": {"data": {"synthetic": {"kind": "vessels", "cases": 10, "size": [32, 32], "slices": 8}},
             "protocol": {"labelled_cases": 1, "unlabelled_cases": 3, "validation_cases": 1, "test_cases": 5},
             "train": {"epochs": 3, "stream": "two-stream"}},
    "methods": [{"name": "mismatch", "model": "mm"}, {"name": "sup1"}],
    "grid": {"labelled_slices": [10], "fold": [0, 1], "seed": [0, 1, 2]},
}


def _file(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **changes}))
    return path


def test_design_without_pilot_gives_mdd_in_sd_units_and_a_labelled_estimate(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["study", "plan", str(_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "12 trials" in out and "mismatch 6, sup1 6" in out
    assert "6 paired runs (2 folds x 3 seeds)" in out and "smallest reachable p 0.0312" in out
    assert "estimate from bench/bench_methods.py" in out and "no pilot" in out
    assert re.search(r"MDD = \d+\.\d\d x SD of paired run differences", out)


def test_one_seed_and_two_folds_can_never_decide(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = _file(tmp_path, grid={"labelled_slices": [10], "fold": [0, 1], "seed": [0]})
    assert main(["study", "plan", str(path)]) == 0
    assert "can never pass 0.05: no verdict possible" in capsys.readouterr().out


def test_a_bad_target_is_one_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["study", "plan", str(_file(tmp_path)), "--target-mdd", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --target-mdd must be a positive number") and err.count("\n") == 1


def test_a_missing_pilot_is_one_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["study", "plan", str(_file(tmp_path)), "--pilot", str(tmp_path / "nowhere")]) == 2
    assert "--pilot" in capsys.readouterr().err


def _pilot(tmp_path: Path, run_sd: float = 0.02, case_sd: float = 0.03) -> Path:
    return write_runs(tmp_path / "pilot", "plan-demo", "fold", tuple(range(10)),
                      exact_runs(10, run_sd, case_sd, delta=0.01))


def test_pilot_variances_times_and_target(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    pilot = _pilot(tmp_path)
    assert main(["study", "plan", str(_file(tmp_path)), "--pilot", str(pilot), "--target-mdd", "1"]) == 0
    out = capsys.readouterr().out
    assert "SD of paired run differences 2.00 points (pilot, sup1 at the same count, 10 paired runs)" in out
    assert "median train_time_s of the pilot's trials" in out and "variance components (pilot" in out
    # the synthetic pilot's trials took 3600 s each (their spec_json names no epochs: no rescaling)
    assert "mismatch 6.00 h" in out and "sup1 6.00 h" in out
    seeds = int(re.search(r"target 1 points: (\d+) seeds per \(fold, label draw\)", out).group(1))
    plan = plan_study(load_study(_file(tmp_path)), str(pilot), 1.0)
    assert plan.comparisons[0].target_seeds == seeds and seeds > 3


def test_planned_power_at_the_printed_mdd_matches_1000_simulated_studies(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    run_sd, case_sd = 0.02, 0.03  # the pilot's known components: SD of one run's mean difference 2 points
    pilot = _pilot(tmp_path, run_sd, case_sd)
    assert main(["study", "plan", str(_file(tmp_path)), "--pilot", str(pilot)]) == 0
    mdd = float(re.search(r"MDD (\d+\.\d+) points", capsys.readouterr().out).group(1)) / 100
    # 1,000 studies of the planned design (6 paired runs of 5 cases) drawn with those components at a true
    # difference equal to the printed MDD: the share the report's run-level test calls significant.
    rng = np.random.default_rng(2026)
    true_run_sd = np.sqrt(run_sd ** 2 - case_sd ** 2 / CASES)  # the run effect beneath the case noise
    runs = mdd + rng.normal(0, true_run_sd, (1000, 6, 1)) + rng.normal(0, case_sd, (1000, 6, CASES))
    power = float(np.mean(sign_flip_pvalues(runs.mean(axis=2)) < 0.05))
    assert power == pytest.approx(0.80, abs=0.05), f"planned 80% at MDD {mdd:.4f}, simulated {power:.3f}"
