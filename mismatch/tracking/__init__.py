"""Experiment tracking: each trial of a study is a run in MLflow (the default), W&B or
TensorBoard, resumed with its trial. Trackers are imported by name when a trial opens its
run: importing this package imports none of mlflow, wandb or tensorboardX. See docs/studies.md."""

from mismatch.tracking.base import (
    RunInfo,
    Tracker,
    TrackingError,
    TrackingUnavailable,
    config_group,
    open_tracker,
    prepare_tracking,
    run_info,
)
from mismatch.tracking.config import TRACKERS, Tracking, TrackingSpec, WandbOptions

__all__ = ["TRACKERS", "RunInfo", "Tracker", "Tracking", "TrackingError", "TrackingSpec", "TrackingUnavailable", "WandbOptions",
           "config_group", "open_tracker", "prepare_tracking", "run_info"]
