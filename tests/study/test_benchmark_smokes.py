"""The smoke profiles of the two benchmark studies (issue 15) on a real embedded Ray, as a user
runs them: the phantom their comment names, `mismatch study run --profile smoke`, then the report.

LA: 3D (unet3d / mm3d on 16 x 32 x 32 patches, sliding-window testing); ACDC: 2D with four classes
(RV, Myo, LV). Each takes about 40 s on 2 cores (8 trials), hence the slow marker; CI runs both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mismatch.study.store import read_table

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
SMOKES = {
    "la_ssl": ["la2018-h5", "data/la-smoke", "--cases", "8", "--size", "32", "32", "--slices", "16"],
    "acdc_ssl": ["acdc-h5", "data/acdc-smoke", "--cases", "10", "--size", "32", "32", "--slices", "6"],
}


def _mismatch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mismatch", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=400, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("study", sorted(SMOKES))
def test_benchmark_study_smoke_profile(study, tmp_path):
    synth = _mismatch(["data", "synth", *SMOKES[study]], tmp_path)
    assert synth.returncode == 0, synth.stderr
    run = _mismatch(["study", "run", str(ROOT / "studies" / f"{study}.yaml"), "--profile", "smoke",
                     "--storage", "runs", "--tracking", "none"], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    name = f"{study}-smoke"
    assert f"[{name}] finished: 8 completed, 0 failed" in run.stdout

    trials = read_table(str(tmp_path / "runs"), name, "trials")
    assert (trials["status"] == "completed").all()
    assert sorted(set(trials["method"])) == ["mean-teacher", "mismatch", "sup1", "ua-mt"]
    # one budget's trials take the same steps, whatever the method (two-stream)
    assert trials.groupby("labelled_slices")["optimizer_steps"].nunique().eq(1).all()
    cases = read_table(str(tmp_path / "runs"), name, "cases")
    assert set(cases["trial_id"]) == set(trials["trial_id"]) and cases["dice"].between(0, 1).all()
    if study == "la_ssl":
        assert set(trials["model"]) == {"unet3d", "mm3d"}
        test_list = (tmp_path / "data" / "la-smoke" / "test.list").read_text().split()
        assert cases.groupby("trial_id")["case_id"].apply(sorted).map(test_list.__eq__).all()  # test.list, whole volumes
    else:
        classes = read_table(str(tmp_path / "runs"), name, "classes")
        assert set(classes["class_name"]) == {"RV", "Myo", "LV"}
        case_means = classes[classes["level"] == "case"].groupby(["trial_id", "case_id"])["dice"].mean()
        merged = cases.set_index(["trial_id", "case_id"])["dice"]
        pd.testing.assert_series_equal(merged.sort_index(), case_means.sort_index(), check_names=False)

    report = _mismatch(["report", f"runs/{name}"], tmp_path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "reports" / name / "index.html").read_text()
    assert "Published (cited) benchmark figures beside the reproduced ones" in page
    assert ("per class" in page) == (study == "acdc_ssl")
