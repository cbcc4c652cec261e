"""Weights & Biases: one run per trial (its id derived from the study and trial id, so a
resumed trial continues it), ``group=`` its configuration, ``project`` the study.
``mode: offline`` writes under ``<storage>/<study>/wandb/`` without network (``wandb sync``)."""

from __future__ import annotations

import hashlib
from typing import Any

from mismatch.tracking.base import RunInfo, Tracker, local_root, require
from mismatch.tracking.config import TrackingSpec
from mismatch.tracking.sidecar import read_logged, write_logged


class WandbTracker(Tracker):
    """A trial's W&B run, resumed by its id."""

    def __init__(self, spec: TrackingSpec, storage: str, study: str) -> None:
        super().__init__(spec, storage, study)
        self.run: Any = None
        self.folder = ""
        self.trial_id = ""

    @classmethod
    def prepare(cls, spec: TrackingSpec, storage: str, study: str) -> None:
        """Fail on the driver, before any trial, where wandb is not installed."""
        require("wandb", "'mismatch[wandb]'")

    def _start(self, run: RunInfo) -> set[int]:
        wandb = require("wandb", "'mismatch[wandb]'")
        self.folder = local_root(self.storage, self.study, "wandb")
        self.trial_id = run.trial_id
        options = self.spec.wandb
        run_id = hashlib.sha256(f"{run.study}/{run.trial_id}".encode()).hexdigest()[:16]
        self.run = wandb.init(project=options.project or run.study, entity=options.entity, mode=options.mode,
                              dir=self.folder, id=run_id, name=run.trial_id, group=run.group, resume="allow",
                              config=run.params, tags=[f"{k}:{v}" for k, v in run.tags.items()][:64],
                              reinit="create_new")
        return read_logged(self.folder, run.trial_id)

    def _log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log({**metrics, "epoch": epoch}, step=epoch)
        write_logged(self.folder, self.trial_id, self.logged | {epoch})

    def _finish(self, final: dict[str, float], files: dict[str, str]) -> None:
        self.run.summary.update(final)
        for path in files.values():
            self.run.save(path, base_path=self.storage, policy="now")
        self.run.finish(exit_code=0)

    def _fail(self, error: str) -> None:
        self.run.summary["error"] = error[:5000]
        self.run.finish(exit_code=1)
