"""The study's two trainables (a solo trial, a fused group) share one path: the same rows (a
group's plus its fusion columns), the same reports (a group's plus its member counts), the
same failed rows for an unbuildable spec or a permanent error. Without Ray: ``tune.report``
is a list, the training a stub (the tiny trial's result, or an error)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mismatch.config import load_trial_spec
from mismatch.data.errors import DataError
from mismatch.study import units, worker
from mismatch.study.trials import trial_payload
from mismatch.trial.state import EpochReport, NonFiniteLossError

pytest.importorskip("ray")

@pytest.fixture
def reports(monkeypatch) -> list[dict]:
    """``ray.tune`` replaced by a list of reports; no thread or Ray placement calls."""
    reported: list[dict] = []
    monkeypatch.setitem(sys.modules, "ray.tune", types.SimpleNamespace(report=reported.append))
    monkeypatch.setattr(sys.modules["ray"], "tune", sys.modules["ray.tune"], raising=False)
    monkeypatch.setattr("mismatch.runtime.set_threads", lambda n: None)
    monkeypatch.setattr(worker, "placement", lambda: {"ray_node_id": "n", "node_ip": "127.0.0.1"})
    return reported


def _epoch(epoch: int) -> EpochReport:
    return EpochReport(epoch=epoch, losses={"sup": 1.0}, val={"val_dice": 0.5}, time_s=0.1)


def _members(tiny_dict) -> list[dict]:
    """Two study trials (seeds 0 and 1) as a group's ``members``: the tiny trial first."""
    specs = [load_trial_spec(tiny_dict(train={"seed": seed})) for seed in (0, 1)]
    return [{"id": s.trial_id(), "spec": trial_payload(s)} for s in specs]


def _json(row: dict, drop: str) -> str:
    return json.dumps({k: v for k, v in row.items() if not k.startswith(drop)}, sort_keys=True, default=str)


def _trials(storage: Path) -> dict[str, dict]:
    """Each trial's row as written (its own Parquet file: no defaults filled in on reading)."""
    rows = [pq.read_table(path).to_pylist()[0] for path in sorted((storage / "tiny" / "trials").glob("*.parquet"))]
    return {row["trial_id"]: row for row in rows}


def test_a_solo_trial_and_a_group_store_the_same_rows_and_reports(tmp_path, monkeypatch, reports, tiny_dict,
                                                                   tiny_result):
    members = _members(tiny_dict)
    assert members[0]["id"] == tiny_result.trial["trial_id"]
    failure = NonFiniteLossError("loss sup is nan at steps 0-4")

    def run_trial(spec, on_epoch_end, checkpoint_dir):
        for epoch in (0, 1):
            on_epoch_end(_epoch(epoch))
        return tiny_result

    def run_group(specs, kernels, on_epoch_end, checkpoint_dir):
        for epoch in (0, 1):
            on_epoch_end(0, _epoch(epoch))
            on_epoch_end(1, _epoch(epoch))
        return [tiny_result, failure]

    monkeypatch.setattr(worker, "run_trial", run_trial)
    monkeypatch.setattr("mismatch.trial.run.run_group", run_group)
    worker.study_fn({"trial": members[0]}, storage=str(tmp_path / "solo"), threads=1)
    solo_reports = list(reports)
    reports.clear()
    group = units.group_id([m["id"] for m in members])
    worker.study_fn({"trial": {"id": group, "members": members}}, storage=str(tmp_path / "group"), threads=1)

    metrics = {"val_dice": 0.5, "loss_sup": 1.0}
    iou = float(tiny_result.images["iou"].mean())
    assert solo_reports == [{"epoch": 1, **metrics}, {"epoch": 2, **metrics},
                            {"status_failed": 0, "done_trial": 1, "test_iou": iou}]
    assert reports == [{"epoch": 1, "member": 0, **metrics}, {"member_epoch": 1, "member": 1, **metrics},
                       {"epoch": 2, "member": 0, **metrics}, {"member_epoch": 2, "member": 1, **metrics},
                       {"status_failed": 0, "members": 2, "members_failed": 1, "done_trial": 1, "test_iou": iou,
                        "error": f"NonFiniteLossError: {failure}"}]
    solo, fused = _trials(tmp_path / "solo"), _trials(tmp_path / "group")
    alone, member = solo[members[0]["id"]], fused[members[0]["id"]]
    assert (alone["fuse_group"], alone["fuse_size"]) == ("", 1)
    assert (member["fuse_group"], member["fuse_size"]) == (group, 2)
    assert set(alone) == set(member)  # one row, the fusion columns apart equal
    assert _json(alone, drop="fuse_") == _json(member, drop="fuse_")
    failed = fused[members[1]["id"]]
    assert failed["status"] == "failed" and failed["error"] == f"NonFiniteLossError: {failure}"
    assert (failed["fuse_group"], failed["fuse_size"]) == (group, 2)
    assert not (tmp_path / "solo" / "tiny" / "checkpoints" / members[0]["id"]).exists()
    assert not (tmp_path / "group" / "tiny" / "checkpoints" / group).exists()


def test_a_permanent_error_fails_every_member_for_good_with_one_report(tmp_path, monkeypatch, reports, tiny_dict):
    members = _members(tiny_dict)

    def broken(*args, **kwargs):
        raise DataError("case_003 has no label")

    monkeypatch.setattr(worker, "run_trial", broken)
    monkeypatch.setattr("mismatch.trial.run.run_group", broken)
    worker.study_fn({"trial": members[0]}, storage=str(tmp_path / "solo"), threads=1)
    group = units.group_id([m["id"] for m in members])
    worker.study_fn({"trial": {"id": group, "members": members}}, storage=str(tmp_path / "group"), threads=1)

    error = "DataError: case_003 has no label"
    assert reports == [{"status_failed": 1, "error": error},
                       {"status_failed": 1, "members": 2, "members_failed": 2, "error": error}]
    (alone,) = _trials(tmp_path / "solo").values()
    assert alone["status"] == "failed" and alone["error"] == error
    assert "fuse_group" not in alone and "fuse_size" not in alone  # a solo trial's failed row, as before fusion
    fused = _trials(tmp_path / "group")
    assert sorted(fused) == sorted(m["id"] for m in members)
    assert {(r["status"], r["error"], r["fuse_group"], r["fuse_size"]) for r in fused.values()} == \
        {("failed", error, group, 2)}
    assert not (tmp_path / "group" / "tiny" / "checkpoints" / group).exists()


def test_an_unbuildable_spec_fails_every_member_from_its_payload(tmp_path, reports, tiny_dict):
    members = _members(tiny_dict)
    members[1]["spec"]["train"]["lr"] = None  # the second member's spec no longer validates
    group = units.group_id([m["id"] for m in members])
    worker.study_fn({"trial": {"id": group, "members": members}}, storage=str(tmp_path), threads=1)

    (report,) = reports
    assert report["status_failed"] == 1 and (report["members"], report["members_failed"]) == (2, 2)
    assert report["error"].startswith("SpecError: ") and "train.lr" in report["error"]
    fused = _trials(tmp_path)
    assert sorted(fused) == sorted(m["id"] for m in members)
    assert {(r["status"], r["error"], r["fuse_group"], r["fuse_size"]) for r in fused.values()} == \
        {("failed", report["error"], group, 2)}



def test_a_resumed_group_leaves_a_member_it_stored_before_untouched(tmp_path, monkeypatch, reports, tiny_dict,
                                                                    tiny_result):
    """A kill between two members' row writes: the re-run trains the same group from its
    checkpoint, stores only the member without rows, and reports only that member."""
    members = _members(tiny_dict)
    group = units.group_id([m["id"] for m in members])
    errors = iter([NonFiniteLossError("loss sup is nan at steps 0-4"), NonFiniteLossError("loss sup is inf at step 7")])
    monkeypatch.setattr("mismatch.trial.run.run_group",
                        lambda specs, kernels, on_epoch_end, checkpoint_dir: [tiny_result, next(errors)])
    config = {"trial": {"id": group, "members": members}}
    worker.study_fn(config, storage=str(tmp_path), threads=1)
    trials = tmp_path / "tiny" / "trials"
    stored = trials / f"{members[0]['id']}.parquet"
    before = stored.stat().st_mtime_ns
    reports.clear()

    worker.study_fn(config, storage=str(tmp_path), threads=1)  # the same group again, member 0 stored
    assert stored.stat().st_mtime_ns == before
    rows = _trials(tmp_path)
    assert rows[members[0]["id"]]["status"] == "completed"
    assert rows[members[1]["id"]]["error"] == "NonFiniteLossError: loss sup is inf at step 7"
    assert reports == [{"status_failed": 1, "members": 1, "members_failed": 1, "done_trial": 0,
                        "test_iou": reports[0]["test_iou"], "error": "NonFiniteLossError: loss sup is inf at step 7"}]
