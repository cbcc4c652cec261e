"""`study run --until-decided`: rounds of seeds, the spending boundary, resume, status and the report."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mismatch.cli import main
from mismatch.config import SpecError
from mismatch.report import build_report
from mismatch.stats.sequential import plan_looks
from mismatch.study import sequential as seq
from mismatch.study.trials import Study, load_study
from tests.study.runs_helpers import CASES, write_runs

STUDY = {
    "name": "seq-demo",
    "base": {"data": {"synthetic": {"kind": "vessels", "cases": 10, "size": [32, 32], "slices": 8}},
             "protocol": {"labelled_cases": 1, "unlabelled_cases": 3, "validation_cases": 1, "test_cases": 5},
             "train": {"epochs": 1, "stream": "two-stream"}},
    "methods": [{"name": "mismatch", "model": "mm"}, {"name": "sup1"}],
    "grid": {"labelled_slices": [10], "fold": [0], "seed": [0, 1, 2, 3, 4, 5]},
}


def _study(tmp_path: Path) -> Study:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "storage": str(tmp_path / "runs")}))
    return load_study(path)


class FakeRounds:
    """Stands in for `study run`: writes each round's seeds as stored rows with a known gap."""

    def __init__(self, tmp_path: Path, gaps: np.ndarray) -> None:
        self.root, self.gaps, self.calls = tmp_path / "runs", gaps, []

    def __call__(self, study: Study) -> int:
        seeds = tuple(study.file.grid.seed)
        self.calls.append(seeds)
        diffs = {s: np.full(CASES, self.gaps[s]) + np.linspace(-0.01, 0.01, CASES) for s in seeds}
        write_runs(self.root, study.name, "seed", seeds, diffs)
        return 0


def test_schedule_adds_one_seed_per_round_and_refuses_a_smaller_budget() -> None:
    assert seq.schedule([0, 1, 2], 5) == [[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
    assert seq.schedule([3, 7], 3) == [[3, 7], [3, 7, 0]]
    with pytest.raises(SpecError, match="--max-seeds 2 is below"):
        seq.schedule([0, 1, 2], 2)


def test_a_clear_gap_stops_early_and_a_rerun_runs_nothing(tmp_path: Path) -> None:
    study = _study(tmp_path)
    fake = FakeRounds(tmp_path, np.full(12, 0.05))  # every seed favours MisMatch by 5 points
    out = io.StringIO()
    assert seq.run_until_decided(study, 10, fake, out) == 0
    state = seq.read_state(study.storage, study.name)
    looks = plan_looks(list(range(6, 11)), alpha=0.05, family=1)
    # the first look whose nominal level the exact floor 2/2^n passes: 6 seeds cannot (0.031 > level)
    first = next(i for i, (lk, n) in enumerate(zip(looks, range(6, 11))) if 2 / 2 ** n <= lk.nominal_alpha)
    assert state["stopped"] == "decided" and len(state["rounds"]) == first + 1 < 5
    assert state["decided"]["labelled_slices=10 sup1"]["verdict"] == "better"
    assert state["nominal_alpha"] == pytest.approx([lk.nominal_alpha for lk in looks])
    assert "every comparison decided: stop" in out.getvalue()
    again = io.StringIO()
    assert seq.run_until_decided(study, 10, fake, again) == 0 and len(fake.calls) == first + 1
    assert "already stopped (decided)" in again.getvalue()


def test_no_gap_runs_to_the_budget_and_says_not_separated(tmp_path: Path) -> None:
    study = _study(tmp_path)
    rng = np.random.default_rng(0)
    fake = FakeRounds(tmp_path, rng.normal(0, 0.02, 12))
    out = io.StringIO()
    assert seq.run_until_decided(study, 8, fake, out) == 0
    state = seq.read_state(study.storage, study.name)
    assert state["stopped"] == "budget" and len(state["rounds"]) == 3 and state["decided"] == {}
    assert "not separated" in out.getvalue()
    html = build_report(tmp_path / "runs" / "seq-demo", tmp_path / "report").read_text()
    assert "Sequential study (group-sequential: Lan-DeMets O" in html and "recorded boundary crossings" in html


def test_an_interrupted_round_resumes_and_a_changed_budget_is_refused(tmp_path: Path) -> None:
    study = _study(tmp_path)
    fake = FakeRounds(tmp_path, np.full(12, 0.001) * np.array([1, -1] * 6))
    calls = []

    def failing(s: Study) -> int:
        calls.append(tuple(s.file.grid.seed))
        return 130 if len(calls) == 2 else fake(s)

    assert seq.run_until_decided(study, 8, failing, io.StringIO()) == 130
    assert len(seq.read_state(study.storage, study.name)["rounds"]) == 1
    assert seq.run_until_decided(study, 8, fake, io.StringIO()) == 0
    assert fake.calls[-1] == (0, 1, 2, 3, 4, 5, 6, 7) and fake.calls[1] == (0, 1, 2, 3, 4, 5, 6)
    with pytest.raises(SpecError, match="was planned with rounds"):
        seq.run_until_decided(study, 9, fake, io.StringIO())


def test_status_knows_the_rounds(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    study = _study(tmp_path)
    seq.run_until_decided(study, 7, FakeRounds(tmp_path, np.zeros(12)), io.StringIO())
    path = tmp_path / "study.yaml"
    assert main(["study", "status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sequential: round 2 of 2 done (max seeds 7); 0 decided; stopped: budget" in out
    state = json.loads((tmp_path / "runs" / "seq-demo" / "sequential.json").read_text())
    assert [r["seeds"] for r in state["rounds"]] == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6]]


def test_max_seeds_needs_until_decided(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    _study(tmp_path)
    assert main(["study", "run", str(tmp_path / "study.yaml"), "--max-seeds", "4"]) == 2
    assert "--max-seeds needs --until-decided" in capsys.readouterr().err


TINY = {
    "name": "seq-e2e",
    "base": {"data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10, "seed": 0}},
             "protocol": {"labelled_cases": 1, "unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2},
             "train": {"epochs": 1, "lr": 0.001, "snapshot_k": 1, "prediction_maps": 0, "stream": "two-stream"}},
    "methods": [{"name": "mismatch", "model": "mm", "width": 4}, {"name": "sup1", "width": 4}],
    "grid": {"labelled_slices": [2], "fold": [0, 1], "seed": [0, 1]},
    "resources": {"cpu": 1, "gpu": 0},
}


@pytest.mark.slow
def test_until_decided_runs_rounds_on_one_embedded_ray(tmp_path: Path) -> None:
    """Two rounds in one driver process (the second reuses the embedded Ray), then status and a rerun."""
    import subprocess
    import sys

    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump({**TINY, "storage": str(tmp_path / "runs")}))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mismatch", *args], capture_output=True, text=True, timeout=300)

    first = cli("study", "run", str(path), "--until-decided", "--max-seeds", "3", "--tracking", "none")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "round 1/2 (seeds [0, 1]" in first.stdout and "round 2/2 (seeds [0, 1, 2]" in first.stdout
    state = json.loads((tmp_path / "runs" / "seq-e2e" / "sequential.json").read_text())
    assert len(state["rounds"]) == 2 and state["stopped"] in ("budget", "decided")
    trials = list((tmp_path / "runs" / "seq-e2e" / "trials").glob("*.parquet"))
    assert len(trials) == 12  # 2 methods x 2 folds x 3 seeds
    status = cli("study", "status", str(path))
    assert "12 done" in status.stdout and "sequential: round 2 of 2 done" in status.stdout
    again = cli("study", "run", str(path), "--until-decided", "--max-seeds", "3", "--tracking", "none")
    assert again.returncode == 0 and "already stopped" in again.stdout
