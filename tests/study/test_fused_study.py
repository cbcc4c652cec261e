"""Fused trials in studies: `resources.fuse` / `--fuse`, one Ray trial per group, rows per member.

The Ray tests drive `mismatch study run` in a subprocess as tests/study/test_study_e2e.py does.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mismatch.results.rows import fill_trial_defaults
from mismatch.study.progress import ProgressTracker, group_labels
from mismatch.study.status import study_status
from mismatch.study.store import read_table, write_group_members, write_trial
from mismatch.study.study_file import parse_fuse
from mismatch.study.trials import load_study
from mismatch.study.units import AUTO_FUSE_CPU, fuse_size, group_id, plan_units, unit_config

STUDY = {
    "name": "fused",
    "base": {
        "data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10, "seed": 0}},
        "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2},
        "train": {"epochs": 1, "snapshot_k": 1, "prediction_maps": 1, "stream": "two-stream"},
    },
    # 4 MisMatch trials (2 alphas x 2 folds) and 2 sup1 trials, which cannot fuse
    "methods": [{"name": "mismatch", "width": 4, "alpha": [0.002, 0.01]}, {"name": "sup1", "width": 4}],
    "grid": {"labelled_slices": [2], "fold": [0, 1], "seed": [0]},
    "resources": {"cpu": 1, "fuse": 3},
    "max_failures": 1,
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    extra = ["--tracking", "none"] if args[:2] == ["study", "run"] else []
    return subprocess.run([sys.executable, "-m", "mismatch", *args, *extra], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


# -- without Ray -----------------------------------------------------------------------------------

def test_fuse_setting_validates_with_one_line(tmp_path):
    assert parse_fuse("auto") == "auto" and parse_fuse("3") == 3
    with pytest.raises(ValueError, match="--fuse must be an integer >= 1 or 'auto', not '0'"):
        parse_fuse("0")
    bad = _write(tmp_path / "bad.yaml", {**STUDY, "resources": {"cpu": 1, "fuse": "two"}})
    status = subprocess.run([sys.executable, "-m", "mismatch", "study", "status", str(bad)], capture_output=True,
                            text=True, timeout=120)
    assert status.returncode != 0
    assert "resources.fuse: fuse must be an integer >= 1 or 'auto', not 'two'" in status.stderr


def test_plan_fuses_compatible_trials_and_leaves_the_rest_alone(tmp_path):
    study = load_study(_write(tmp_path / "s.yaml", STUDY), None, str(tmp_path / "r"))
    specs = study.trials()
    assert study.file.resources.fuse == 3
    units = plan_units(specs, 3)
    assert [len(u) for u in units] == [3, 1, 1, 1]
    group = unit_config(units[0])
    assert group["id"] == group_id([s.trial_id() for s in units[0]]) == group_id([s.trial_id() for s in units[0]][::-1])
    assert [m["id"] for m in group["members"]] == [s.trial_id() for s in units[0]]
    assert {s.protocol.fold for s in units[0]} == {0, 1} and {s.method.alpha for s in units[0]} == {0.002, 0.01}
    assert unit_config(units[2]) == {"id": units[2][0].trial_id(), "spec": json.loads(units[2][0].model_dump_json())}
    assert [u[0].method.name for u in units[1:]] == ["mismatch", "sup1", "sup1"]
    assert [len(u) for u in plan_units(specs, 1)] == [1] * 6  # fuse 1: today's one trial per Tune trial


def test_a_group_started_by_an_earlier_run_is_planned_again_as_it_was(tmp_path):
    """A kill between two members' row writes leaves a group with a stored member: the re-run
    plans the same group (the same id: its checkpoint) with every member, not a new one."""
    study = load_study(_write(tmp_path / "s.yaml", STUDY), None, str(tmp_path / "r"))
    specs = study.trials()
    first = plan_units(specs, 3)[0]
    ids = [s.trial_id() for s in first]
    started = {group_id(ids): ids}
    todo = [s for s in specs if s.trial_id() != ids[0]]  # the first member's rows are stored
    units = plan_units(todo, 2, started, specs)  # whatever K is now
    assert [s.trial_id() for s in units[0]] == ids and unit_config(units[0])["id"] == group_id(ids)
    assert sorted(s.trial_id() for u in units[1:] for s in u) == sorted(set(s.trial_id() for s in todo) - set(ids))
    assert [len(u) for u in plan_units(todo, 1, started, specs)] == [1] * 5  # fusion off: every trial alone
    assert plan_units(todo, 3, {"fused-000000000000": ids}, specs)[0] != first  # not the members' group: ignored
    assert plan_units([s for s in specs if s.trial_id() not in ids], 3, started, specs)[0] != first  # nothing left to run


def test_fuse_auto_for_trials_without_a_gpu_takes_the_cpu_default(tmp_path, monkeypatch):
    from mismatch.study import units

    study = load_study(_write(tmp_path / "s.yaml", {**STUDY, "resources": {"cpu": 1, "fuse": "auto"}}), None,
                       str(tmp_path / "r"))
    monkeypatch.setattr(units, "measure_on_worker", lambda spec, gpu: pytest.fail("no GPU: nothing to measure"))
    specs = study.trials()
    out = io.StringIO()
    assert fuse_size(study.file.resources.fuse, specs, "s", out, gpu=0) == AUTO_FUSE_CPU == 4
    assert out.getvalue() == "[s] fuse auto: K = 4 (trials get no GPU: the CPU default)\n"
    on_cpu = [s.model_copy(update={"train": s.train.model_copy(update={"device": "cpu"})}) for s in specs]
    assert fuse_size("auto", on_cpu, "s", out, gpu=1) == 4  # device: cpu trains on the CPU whatever it holds
    assert fuse_size(2, specs, "s", out, gpu=1) == 2 and out.getvalue().count("\n") == 2
    sup = [s for s in specs if s.method.name == "sup1"]
    assert fuse_size("auto", sup, "s", io.StringIO(), gpu=1) == 1  # nothing to fuse


@pytest.mark.parametrize(("member_gib", "free_gib", "gpu", "k"),
                         [(1.5, 100, 1, 53), (0.1, 100, 1, 64), (90, 100, 1, 1), (1.5, 100, 0.25, 13), (1.5, 100, 2, 53)])
def test_fuse_auto_on_a_gpu_fills_its_share_of_the_free_memory(tmp_path, monkeypatch, member_gib, free_gib, gpu, k):
    """The GPU branch's arithmetic (the measurement itself needs a GPU): K = 0.8 x free x
    min(gpu, 1) / one member's peak, at least 1 and at most 64; 0.25: four groups share the GPU."""
    from mismatch.study import units

    study = load_study(_write(tmp_path / "s.yaml", {**STUDY, "resources": {"cpu": 1, "fuse": "auto"}}), None,
                       str(tmp_path / "r"))
    asked = []
    monkeypatch.setattr(units, "measure_on_worker",
                        lambda spec, share: asked.append(share) or (int(member_gib * 2**30), int(free_gib * 2**30)))
    out = io.StringIO()
    assert fuse_size("auto", study.trials(), "s", out, gpu=gpu) == k
    assert asked == [gpu]  # measured on a worker holding the trials' own share
    assert out.getvalue() == (f"[s] fuse auto: K = {k} ({member_gib * 1024:.0f} MiB per member, "
                              f"{free_gib * 1024:.0f} MiB free on the GPU, {min(gpu, 1):g} of it per group)\n")


PROBE = """
import json, sys
import ray
from mismatch.study.units import auto_fuse
from mismatch.study.trials import load_study
ray.init(num_cpus=1, num_gpus=1, include_dashboard=False, logging_level="ERROR")  # a GPU this machine lacks
print(json.dumps(auto_fuse(load_study(sys.argv[1], None, sys.argv[2]).trials()[0], 0.5)))
"""


@pytest.mark.slow
def test_fuse_auto_measures_on_a_ray_worker_holding_the_gpu_share(tmp_path):
    """The probe runs as a Ray task that asks for the trials' GPU share (a driver on a GPU-less
    head measures nothing itself): on a cluster declaring a GPU this CPU machine lacks, the task
    is scheduled, sees no CUDA device and falls back to the CPU default."""
    study = _write(tmp_path / "s.yaml", {**STUDY, "resources": {"cpu": 1, "gpu": 0.5, "fuse": "auto"}})
    proc = subprocess.run([sys.executable, "-c", PROBE, str(study), str(tmp_path / "r")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
        4, "no CUDA device on a worker holding the trials' GPU share: the CPU default"]


def test_old_trials_rows_read_with_fusion_defaults(tmp_path):
    old = {"schema_version": 2, "study": "s", "trial_id": "a", "status": "completed"}
    write_trial(str(tmp_path), "s", "a", old)
    write_trial(str(tmp_path), "s", "b", {**old, "trial_id": "b", "fuse_group": "fused-x", "fuse_size": 3})
    rows = read_table(str(tmp_path), "s", "trials").set_index("trial_id")
    assert rows.loc["a", "fuse_group"] == "" and rows.loc["a", "fuse_size"] == 1
    assert rows.loc["b", "fuse_group"] == "fused-x" and rows.loc["b", "fuse_size"] == 3
    assert str(rows["fuse_size"].dtype) == "int64"
    assert list(fill_trial_defaults(pd.DataFrame({"trial_id": ["c"]}))["fuse_size"]) == [1]


def test_status_counts_the_members_of_a_running_group(tmp_path):
    study = load_study(_write(tmp_path / "s.yaml", STUDY), None, str(tmp_path / "r"))
    units = plan_units(study.trials(), 3)
    write_group_members(study.storage, study.name, unit_config(units[0])["id"], [s.trial_id() for s in units[0]])
    st = study_status(study, study.storage)
    assert (st.done, st.running, st.failed, st.pending) == (0, 3, 0, 3)


def test_progress_counts_members_of_a_group():
    class Trial:
        trial_id = "g"
        status = "TERMINATED"
        config = {"trial": {"id": "g", "members": [{"id": "a", "spec": {"method": {"name": "mismatch"}}}] * 3}}
        last_result = {"members": 3, "members_failed": 1, "status_failed": 0, "error": "NonFiniteLossError: x"}

    progress = ProgressTracker("s", total=5, done=0, slots=1, labels=group_labels([Trial.config["trial"]]),
                               clock=iter(range(100)).__next__)
    progress.on_trial_start(0, [Trial()], Trial())
    progress.on_trial_complete(0, [Trial()], Trial())
    assert (progress.done, progress.failed) == (2, 1)
    assert progress.labels["g"].text() == "mismatch[fused x3]"


# -- real Ray --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_fused_study_rows_equal_the_same_study_alone(tmp_path):
    """fuse 3 over 4 MisMatch trials and 2 sup1 trials: one group of 3, three trials alone; each
    member's rows equal the same study run with ``--fuse 1`` (which overrides the file's 3)."""
    study_file = _write(tmp_path / "fused.yaml", STUDY)
    alone, fused = tmp_path / "alone", tmp_path / "fusedrun"
    run = _run(["study", "run", str(study_file), "--storage", str(alone), "--fuse", "1"])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "fused group" not in run.stdout
    run = _run(["study", "run", str(study_file), "--storage", str(fused)])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "fuse 3: 3 trial(s) in 1 fused group(s), 3 alone" in run.stdout

    solo = read_table(str(alone), "fused", "trials").set_index("trial_id").sort_index()
    rows = read_table(str(fused), "fused", "trials").set_index("trial_id").sort_index()
    assert list(rows.index) == list(solo.index) and (rows["status"] == "completed").all()
    assert (solo["fuse_group"] == "").all() and (solo["fuse_size"] == 1).all()
    grouped = rows[rows["fuse_size"] == 3]
    assert len(grouped) == 3 and grouped["fuse_group"].nunique() == 1
    assert grouped["fuse_group"].iloc[0] == group_id(list(grouped.index))
    assert (rows.loc[rows["fuse_size"] == 1, "fuse_group"] == "").sum() == 3
    assert set(rows.loc[rows["method"] == "sup1", "fuse_size"]) == {1}
    for column in ("epochs", "optimizer_steps", "labelled_presentations", "alpha", "fold"):
        pd.testing.assert_series_equal(rows[column], solo[column])  # sup1's alpha: NaN in both

    key = ["trial_id", "case_id", "slice_index", "patch"]
    a = read_table(str(alone), "fused", "images").sort_values(key).reset_index(drop=True)
    b = read_table(str(fused), "fused", "images").sort_values(key).reset_index(drop=True)
    assert (a[key] == b[key]).all().all()
    gap = (a["iou"] - b["iou"]).abs()  # the default CPU kernels: a group steps its members one by one
    assert gap.max() == 0, a.assign(gap=gap).groupby("trial_id")["gap"].max()

    status = _run(["study", "status", str(study_file), "--storage", str(fused)])
    assert "6 trials: 6 done, 0 running, 0 failed, 0 pending" in status.stdout
    assert not list((fused / "fused" / "checkpoints").glob("fused-*/fused.pt"))


def test_a_group_out_of_retries_gets_a_failed_row_for_each_member_not_stored(tmp_path):
    """The driver's record of a fused group whose worker kept dying: failed rows with its fusion
    columns, except for a member whose completed row was stored before."""
    import types

    from mismatch.study.runner import _record_errored

    study = load_study(_write(tmp_path / "s.yaml", STUDY), None, str(tmp_path / "r"))
    group = unit_config(plan_units(study.trials(), 3)[0])
    done = group["members"][0]["id"]
    write_trial(study.storage, "fused", done, {"trial_id": done, "status": "completed", "study": "fused"})
    grid = [types.SimpleNamespace(metrics={}, error=RuntimeError("worker died"), config={"trial": group})]
    assert _record_errored(grid, study.storage) is None
    rows = read_table(study.storage, "fused", "trials").set_index("trial_id")
    assert rows.loc[done, "status"] == "completed"
    failed = rows.drop(index=done)
    assert len(failed) == 2 and (failed["status"] == "failed").all()
    assert failed["error"].str.contains("worker died").all()
    assert (failed["fuse_group"] == group["id"]).all() and (failed["fuse_size"] == 3).all()
