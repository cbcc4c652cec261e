"""The study file's ``tracking`` key: which experiment tracker records the trials.

Written as a name (``mlflow``, ``wandb``, ``tensorboard``, ``none``) or a one-key mapping that
gives the tracker's options (``{mlflow: URI}``, ``{wandb: {mode: offline}}``,
``{tensorboard: DIR}``). It is a setting of the study, not of a trial: it never changes a
trial's id. Pydantic only: reading a study file never imports a tracker's package.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from mismatch.config import StrictModel
from mismatch.registry import Registry, did_you_mean

#: Trackers by name; each entry names its class (``module:attribute``), imported when a trial
#: opens its run, so that importing mismatch never imports mlflow, wandb or tensorboardX.
TRACKERS: Registry[str] = Registry("tracker")
TRACKERS.register("mlflow", "mismatch.tracking.mlflow_run:MlflowTracker")
TRACKERS.register("wandb", "mismatch.tracking.wandb_run:WandbTracker")
TRACKERS.register("tensorboard", "mismatch.tracking.tensorboard_run:TensorboardTracker")
TRACKERS.register("none", "mismatch.tracking.base:NoTracker")


class WandbOptions(StrictModel):
    """Options of ``tracking: {wandb: {...}}``; ``mode: offline`` writes runs locally, no network
    (``wandb sync`` uploads them later). ``project`` defaults to the study's name."""

    project: str | None = None
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None


class TrackingSpec(StrictModel):
    """A study's tracker, normalised: ``kind`` names it, ``uri`` is MLflow's tracking URI or
    TensorBoard's log folder (None: under ``<storage>/<study>/``), ``wandb`` W&B's options."""

    kind: str = "mlflow"
    uri: str | None = None
    wandb: WandbOptions = WandbOptions()


def _expected() -> str:
    return f"expected one of {', '.join(TRACKERS.names())} or a one-key mapping such as {{mlflow: URI}}"


def parse_tracking(value: Any) -> Any:
    """The ``tracking`` value as written in a study file, as :class:`TrackingSpec` data."""
    if isinstance(value, TrackingSpec):
        return value
    if isinstance(value, str):
        name, options = value, None
    elif isinstance(value, dict) and len(value) == 1:
        name, options = next(iter(value.items()))
    else:
        raise ValueError(_expected())
    if name not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}{did_you_mean(name, TRACKERS.names())}; {_expected()}")
    if name == "wandb":
        if options is not None and not isinstance(options, dict):
            raise ValueError("wandb takes a mapping of options: {wandb: {project: P, entity: E, mode: offline}}")
        return {"kind": name, "wandb": options or {}}
    if name == "none" and options is not None:
        raise ValueError("none takes no options")
    if options is not None and not isinstance(options, str):
        raise ValueError(f"{name} takes one string: {{{name}: {'URI' if name == 'mlflow' else 'FOLDER'}}}")
    return {"kind": name, "uri": options}


#: The type of the study file's ``tracking`` field.
Tracking = Annotated[TrackingSpec, BeforeValidator(parse_tracking)]
