"""MLflow: one experiment per study, one run per trial (tagged with its ``config_group``).

The default store needs no server and no network: an SQLite database and an artifact folder
under ``<storage>/<study>/mlruns/`` (MLflow's plain-file store is in maintenance mode), opened
with ``mlflow ui --backend-store-uri sqlite:///<storage>/<study>/mlruns/mlflow.db``.
``tracking: {mlflow: URI}`` logs to a shared tracking server (or any store URI) instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mismatch.tracking.base import RunInfo, Tracker, local_root, require
from mismatch.tracking.config import TrackingSpec

T = TypeVar("T")
#: MLflow's limit on a param's value (longer values are cut, with a marker).
PARAM_CHARS = 6000
#: The metric logged last in each epoch's batch: its history is what the run has logged.
EPOCH_KEY = "epoch"


def store(spec: TrackingSpec, storage: str, study: str) -> tuple[str, str | None]:
    """The tracking URI and the experiment's artifact location (None: the server's default)."""
    if spec.uri:
        return spec.uri, None
    root = local_root(storage, study, "mlruns")
    os.makedirs(root, exist_ok=True)
    return f"sqlite:///{root}/mlflow.db", os.path.join(root, "artifacts")


def client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri`` (no usage telemetry leaves the machine; MLflow's INFO
    lines, such as creating the store's tables, stay out of the study's progress)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    require("mlflow", "mlflow-skinny")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def retry(call: Callable[[], T], tries: int = 6) -> T:
    """``call()``, retried while SQLite says another trial holds its lock."""
    for attempt in range(tries):
        try:
            return call()
        except Exception as err:
            if "locked" not in str(err) or attempt == tries - 1:
                raise
            time.sleep(0.2 * 2 ** attempt)
    raise AssertionError("unreachable")


def experiment_id(mlflow: Any, study: str, artifacts: str | None) -> str:
    """The study's experiment, created if missing (another worker may create it at once)."""
    found = mlflow.get_experiment_by_name(study)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow.create_experiment(study, artifact_location=artifacts, tags={"mismatch.study": study})
    except Exception:  # created meanwhile by another trial
        found = mlflow.get_experiment_by_name(study)
        if found is None:
            raise
        return found.experiment_id


class MlflowTracker(Tracker):
    """A trial's MLflow run, found again by its ``trial_id`` tag when the trial resumes."""

    def __init__(self, spec: TrackingSpec, storage: str, study: str) -> None:
        super().__init__(spec, storage, study)
        self.run_id = ""
        self.mlflow: Any = None

    @classmethod
    def prepare(cls, spec: TrackingSpec, storage: str, study: str) -> None:
        """Create the store's tables and the study's experiment before trials race to."""
        uri, artifacts = store(spec, storage, study)
        experiment_id(client(uri), study, artifacts)

    def _start(self, run: RunInfo) -> set[int]:
        uri, artifacts = store(self.spec, self.storage, self.study)
        self.mlflow = client(uri)
        experiment = retry(lambda: experiment_id(self.mlflow, run.study, artifacts))
        found = retry(lambda: self.mlflow.search_runs([experiment], f"tags.trial_id = '{run.trial_id}'",
                                                      max_results=1, order_by=["attributes.start_time ASC"]))
        if found:
            self.run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                retry(lambda: self.mlflow.update_run(self.run_id, status="RUNNING"))
            history = retry(lambda: self.mlflow.get_metric_history(self.run_id, EPOCH_KEY))
            return {int(m.step) for m in history}
        from mlflow.entities import Param

        created = retry(lambda: self.mlflow.create_run(experiment, run_name=run.trial_id, tags=run.tags))
        self.run_id = created.info.run_id
        params = [Param(k, v if len(v) <= PARAM_CHARS else v[:PARAM_CHARS - 3] + "...") for k, v in run.params.items()]
        for i in range(0, len(params), 100):  # MLflow's batch limit for params
            retry(lambda chunk=params[i:i + 100]: self.mlflow.log_batch(self.run_id, params=chunk))
        return set()

    def _log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, epoch) for k, v in metrics.items() if k != EPOCH_KEY]
        batch.append(Metric(EPOCH_KEY, float(epoch), now, epoch))  # last: marks the epoch as logged
        retry(lambda: self.mlflow.log_batch(self.run_id, metrics=batch))

    def _finish(self, final: dict[str, float], files: dict[str, str]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, 0) for k, v in final.items()]
        for i in range(0, len(batch), 1000):
            retry(lambda chunk=batch[i:i + 1000]: self.mlflow.log_batch(self.run_id, metrics=chunk))
        for folder, path in files.items():
            retry(lambda folder=folder, path=path: self.mlflow.log_artifact(self.run_id, path, folder))
        retry(lambda: self.mlflow.set_terminated(self.run_id, "FINISHED"))

    def _fail(self, error: str) -> None:
        retry(lambda: self.mlflow.set_tag(self.run_id, "error", error[:5000]))
        retry(lambda: self.mlflow.set_terminated(self.run_id, "FAILED"))
