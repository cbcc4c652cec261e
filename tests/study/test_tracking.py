"""Experiment tracking: each trial is a run (params, per-epoch metrics once each, the final
row, its Parquet files, tags), continued when the trial resumes; ``tracking: none`` writes
nothing; trial ids do not depend on the tracker."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import yaml

from mismatch.config import SpecError, load_trial_spec
from mismatch.study import runner, worker
from mismatch.study.store import read_table
from mismatch.study.trials import load_study, trial_payload
from mismatch.tracking import TrackingError, TrackingSpec, TrackingUnavailable, config_group, prepare_tracking, run_info

pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")


class StopTraining(Exception):
    """Raised from Tune's report to stop a trial after an epoch, as a killed worker would."""


def _fake_tune(monkeypatch, stop_at_epoch: int | None = None) -> list[dict]:
    """Replace ``ray.tune`` with a report that records (and optionally stops the trial)."""
    reports: list[dict] = []

    def report(metrics: dict) -> None:
        reports.append(metrics)
        if stop_at_epoch is not None and metrics.get("epoch") == stop_at_epoch:
            raise StopTraining

    monkeypatch.setitem(sys.modules, "ray.tune", types.SimpleNamespace(report=report))
    monkeypatch.setattr(sys.modules["ray"], "tune", sys.modules["ray.tune"], raising=False)
    monkeypatch.setattr("mismatch.runtime.set_threads", lambda n: None)
    monkeypatch.setattr(worker, "placement", lambda: {"ray_node_id": "n", "node_ip": "127.0.0.1"})
    return reports


def _run(spec, storage: str, tracking: TrackingSpec | None) -> None:
    worker.trial_fn({"trial": {"id": spec.trial_id(), "spec": trial_payload(spec)}}, storage=storage, threads=1,
                    tracking=tracking)


def _client(storage: str, study: str = "tiny"):
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{storage}/{study}/mlruns/mlflow.db")


def _runs(storage: str, study: str = "tiny") -> list:
    client = _client(storage, study)
    experiment = client.get_experiment_by_name(study)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _steps(storage: str, run_id: str, key: str, study: str = "tiny") -> list[int]:
    return sorted(m.step for m in _client(storage, study).get_metric_history(run_id, key))


def test_a_trial_is_an_mlflow_run_with_params_epochs_row_files_and_tags(tmp_path, monkeypatch, tiny_dict):
    _fake_tune(monkeypatch)
    spec = load_trial_spec(tiny_dict(train={"lr": 0.02}))
    storage = str(tmp_path / "runs")
    _run(spec, storage, TrackingSpec())
    [run] = _runs(storage)
    tid = spec.trial_id()
    assert run.info.status == "FINISHED" and run.info.run_name == tid
    assert run.data.params["train.lr"] == "0.02" and run.data.params["method.name"] == "mismatch"
    assert run.data.params["protocol.fold"] == "0" and run.data.params["train.epochs"] == "2"
    tags = run.data.tags
    assert {k: tags[k] for k in ("study", "method", "labelled_slices", "fold", "label_draw", "seed", "trial_id")} == {
        "study": "tiny", "method": "mismatch", "labelled_slices": "2", "fold": "0", "label_draw": "0",
        "seed": str(spec.train.seed), "trial_id": tid}
    assert tags["model"] == spec.method.model and tags["config_group"] == config_group(spec)
    for key in ("val_iou", "loss_loss", "time_s", "epoch"):
        assert _steps(storage, run.info.run_id, key) == [0, 1], key
    epochs = read_table(storage, "tiny", "epochs").sort_values("epoch")
    logged = [m.value for m in sorted(_client(storage).get_metric_history(run.info.run_id, "val_iou"), key=lambda m: m.step)]
    assert logged == pytest.approx(list(epochs["val_iou"]))
    row = read_table(storage, "tiny", "trials").iloc[0]
    assert run.data.metrics["trial.final_val_iou"] == pytest.approx(row["final_val_iou"])
    assert run.data.metrics["trial.train_time_s"] == pytest.approx(row["train_time_s"])
    assert run.data.metrics["trial.epochs"] == 2
    artifacts = {f.path for f in _client(storage).list_artifacts(run.info.run_id, "results/trials")}
    assert artifacts == {f"results/trials/{tid}.parquet"}
    assert {f.path for f in _client(storage).list_artifacts(run.info.run_id, "results")} >= {
        "results/trials", "results/images", "results/epochs"}


def test_a_resumed_trial_continues_its_run_and_logs_each_epoch_once(tmp_path, monkeypatch, tiny_dict):
    spec = load_trial_spec(tiny_dict(train={"epochs": 3, "snapshot_k": 1}))
    storage = str(tmp_path / "runs")
    _fake_tune(monkeypatch, stop_at_epoch=2)  # Tune's epoch count: stops after epoch index 1
    with pytest.raises(StopTraining):
        _run(spec, storage, TrackingSpec())
    [run] = _runs(storage)
    assert run.info.status == "RUNNING" and _steps(storage, run.info.run_id, "val_iou") == [0, 1]
    _fake_tune(monkeypatch)
    _run(spec, storage, TrackingSpec())
    [again] = _runs(storage)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert read_table(storage, "tiny", "trials").iloc[0]["resumed_from_epoch"] == 2
    for key in ("val_iou", "loss_loss", "epoch"):
        assert _steps(storage, run.info.run_id, key) == [0, 1, 2], key


def test_epochs_checkpointed_but_not_logged_are_logged_at_the_end(tmp_path, monkeypatch, tiny_dict):
    """A kill between an epoch's checkpoint and its log: the finish logs it from the epochs table."""
    spec = load_trial_spec(tiny_dict(train={"epochs": 2, "snapshot_k": 1}))
    storage = str(tmp_path / "runs")
    _fake_tune(monkeypatch, stop_at_epoch=1)
    with pytest.raises(StopTraining):
        _run(spec, storage, None)  # epoch 0 checkpointed, never tracked
    assert not (tmp_path / "runs" / "tiny" / "mlruns").exists()
    _fake_tune(monkeypatch)
    _run(spec, storage, TrackingSpec())
    [run] = _runs(storage)
    assert _steps(storage, run.info.run_id, "val_iou") == [0, 1]
    assert set(_client(storage).get_run(run.info.run_id).data.metrics) - {"epoch", "time_s"} <= {
        k for k in _client(storage).get_run(run.info.run_id).data.metrics if k.startswith(("val_", "loss_", "trial."))}


def test_tracking_none_writes_nothing(tmp_path, monkeypatch, tiny_dict):
    _fake_tune(monkeypatch)
    storage = tmp_path / "runs"
    _run(load_trial_spec(tiny_dict()), str(storage), TrackingSpec(kind="none"))
    assert sorted(p.name for p in (storage / "tiny").iterdir()) == ["cases", "checkpoints", "decoders", "epochs", "images",
                                                                     "predictions", "splits", "trials"]
    assert not any(p.name in {"mlruns", "wandb", "tensorboard"} for p in storage.rglob("*"))


def test_tensorboard_writes_event_files_per_configuration_and_trial(tmp_path, monkeypatch, tiny_dict):
    pytest.importorskip("tensorboardX")
    _fake_tune(monkeypatch)
    spec = load_trial_spec(tiny_dict())
    storage = tmp_path / "runs"
    _run(spec, str(storage), TrackingSpec(kind="tensorboard"))
    folder = storage / "tiny" / "tensorboard" / config_group(spec) / spec.trial_id()
    assert any(p.name.startswith("events.out.tfevents") for p in folder.iterdir())
    assert (folder / f"{spec.trial_id()}.logged.json").read_text() == '{"epochs": [0, 1]}'


def test_a_missing_tracker_package_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails
    with pytest.raises(TrackingUnavailable, match=r"pip install 'mismatch\[wandb\]'"):
        prepare_tracking(TrackingSpec(kind="wandb"), "/unused", "s")


def test_the_default_store_needs_a_local_storage_or_an_explicit_uri():
    with pytest.raises(TrackingError, match=r"not s3://bucket/runs: set tracking: \{mlflow: URI\}"):
        prepare_tracking(TrackingSpec(), "s3://bucket/runs", "s")


def test_config_group_joins_folds_seeds_and_draws_only(tiny_dict):
    base = load_trial_spec(tiny_dict())
    replicas = [load_trial_spec(tiny_dict(protocol={"fold": 1})), load_trial_spec(tiny_dict(train={"seed": 7})),
                load_trial_spec(tiny_dict(protocol={"label_draw": 2}))]
    assert {config_group(s) for s in replicas} == {config_group(base)}
    assert len({s.trial_id() for s in [base, *replicas]}) == 4
    assert config_group(load_trial_spec(tiny_dict(method={"alpha": 0.005}))) != config_group(base)
    assert run_info(base).params["data.synthetic.size"] == "[32, 32]"


STUDY = """name: t
base:
  data: {synthetic: {kind: vessels, cases: 6, size: [32, 32], slices: 10}}
  protocol: {unlabelled_cases: 2, validation_cases: 1, test_cases: 2}
methods: [{name: mismatch}]
grid: {labelled_slices: [2], fold: [0, 1]}
"""


@pytest.mark.parametrize("tracking, kind, uri", [
    ("", "mlflow", None), ("tracking: none\n", "none", None),
    ("tracking: {mlflow: 'http://tracker:5000'}\n", "mlflow", "http://tracker:5000"),
    ("tracking: {wandb: {mode: offline}}\n", "wandb", None), ("tracking: tensorboard\n", "tensorboard", None)])
def test_tracking_is_a_study_setting_that_keeps_trial_ids(tmp_path, tracking, kind, uri):
    plain = tmp_path / "plain.yaml"
    plain.write_text(STUDY)
    tracked = tmp_path / "tracked.yaml"
    tracked.write_text(STUDY + tracking)
    study = load_study(tracked)
    assert (study.file.tracking.kind, study.file.tracking.uri) == (kind, uri)
    assert [t.trial_id() for t in study.trials()] == [t.trial_id() for t in load_study(plain).trials()]
    if kind == "wandb":
        assert study.file.tracking.wandb.mode == "offline"


def test_a_mistyped_tracker_names_the_key_and_the_closest_name(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY + "tracking: mlfow\n")
    with pytest.raises(SpecError, match=r"s.yaml:7: tracking: .*unknown tracker 'mlfow' \(did you mean 'mlflow'\?\)"):
        load_study(path)


def test_importing_the_runner_imports_no_tracker_package():
    probe = ("import sys, mismatch, mismatch.study.runner, mismatch.tracking; "
             "print(sorted(m for m in ('mlflow', 'wandb', 'tensorboardX') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


# A killed driver's resumed trials continuing their runs: tests/study/test_study_e2e.py
# (test_killed_driver_resumes_from_checkpoints_without_duplicates runs with the default tracker).


def test_wandb_offline_writes_a_grouped_run_without_network(tmp_path, monkeypatch, tiny_dict):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _fake_tune(monkeypatch)
    spec = load_trial_spec(tiny_dict())
    storage = tmp_path / "runs"
    _run(spec, str(storage), TrackingSpec(kind="wandb", wandb={"mode": "offline"}))
    [run_dir] = (storage / "tiny" / "wandb" / "wandb").glob("offline-run-*")
    assert any(run_dir.glob("*.wandb"))
    logged = storage / "tiny" / "wandb" / f"{spec.trial_id()}.logged.json"
    assert logged.read_text() == '{"epochs": [0, 1]}'


@pytest.mark.parametrize(("flag", "kind"), [([], "mlflow"), (["--tracking", "none"], "none"), (["--tracking", "wandb"], "wandb")])
def test_study_run_tracking_flag_overrides_the_file(monkeypatch, tmp_path, flag, kind):
    from mismatch import cli

    seen = {}

    def fake_run_study(study, **kwargs):
        seen["tracking"] = study.file.tracking
        return types.SimpleNamespace(unfinished=0, failed=0, failed_before=0)

    monkeypatch.setattr(runner, "run_study", fake_run_study)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": {"data": {"synthetic": {"kind": "vessels"}}},
                                    "methods": [{"name": "sup1"}]}))
    assert cli.main(["study", "run", str(path), "--storage", str(tmp_path / "runs"), *flag]) == 0
    assert seen["tracking"].kind == kind
