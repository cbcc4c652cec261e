"""TensorBoard: event files per trial under ``<storage>/<study>/tensorboard/<config_group>/<trial_id>``
(``tracking: {tensorboard: FOLDER}`` moves them), so TensorBoard groups a configuration's
folds and seeds; open with ``tensorboard --logdir <folder>``."""

from __future__ import annotations

import json
import os
from typing import Any

from mismatch.tracking.base import RunInfo, Tracker, local_root, require
from mismatch.tracking.config import TrackingSpec
from mismatch.tracking.sidecar import read_logged, write_logged


class TensorboardTracker(Tracker):
    """A trial's TensorBoard event files (tensorboardX's writer: no TensorFlow needed)."""

    def __init__(self, spec: TrackingSpec, storage: str, study: str) -> None:
        super().__init__(spec, storage, study)
        self.writer: Any = None
        self.folder = ""
        self.trial_id = ""

    @classmethod
    def prepare(cls, spec: TrackingSpec, storage: str, study: str) -> None:
        """Fail on the driver, before any trial, where tensorboardX is not installed."""
        require("tensorboardX", "'mismatch[tensorboard]'")

    def _start(self, run: RunInfo) -> set[int]:
        board = require("tensorboardX", "'mismatch[tensorboard]'")
        root = self.spec.uri or local_root(self.storage, self.study, "tensorboard")
        self.folder = os.path.join(root, run.group, run.trial_id)
        self.trial_id = run.trial_id
        self.writer = board.SummaryWriter(logdir=self.folder)
        logged = read_logged(self.folder, run.trial_id)
        if not logged:
            self.writer.add_text("params", json.dumps(run.params, indent=1, sort_keys=True), 0)
            self.writer.add_text("tags", json.dumps(run.tags, indent=1, sort_keys=True), 0)
        return logged

    def _log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()
        write_logged(self.folder, self.trial_id, self.logged | {epoch})

    def _finish(self, final: dict[str, float], files: dict[str, str]) -> None:
        for key, value in final.items():
            self.writer.add_scalar(key, value, 0)
        self.writer.add_text("result_files", "\n".join(f"{k}: {v}" for k, v in files.items()), 0)
        self.writer.close()

    def _fail(self, error: str) -> None:
        self.writer.add_text("error", error[:5000], 0)
        self.writer.close()
