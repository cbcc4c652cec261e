"""Typed, strictly loaded specifications for a trial.

Every setting a trial needs to be re-run lives in a :class:`TrialSpec`. Specs are pydantic
models with ``extra="forbid"``: an unknown or mistyped key is an error that names the key
(and the file, when loaded from one), never a silently ignored setting.

A method's own settings (``method:`` section) are validated by the config class that the
method registers under its name (see :mod:`mismatch.methods`), so adding a method adds its
settings without touching this module.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    model_validator,
)

SCHEMA_VERSION = 1


class SpecError(ValueError):
    """A spec could not be loaded: names the file (if any) and every offending key."""


class StrictModel(BaseModel):
    """Base of every spec: unknown keys are errors; instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SynthSpec(StrictModel):
    """A synthetic phantom dataset generated on the fly (deterministic from ``seed``)."""

    kind: Literal["vessels", "tumours"] = "vessels"
    cases: int = Field(10, ge=1)
    size: tuple[Annotated[int, Field(ge=16)], Annotated[int, Field(ge=16)]] = (64, 64)
    slices: int = Field(24, ge=1)
    seed: int = 0


class DataSpec(StrictModel):
    """Where the images come from and how slices are prepared from them.

    Exactly one of ``root`` (a dataset in the MSD / nnU-Net raw layout) and ``synthetic``
    is given. The preparation fields follow the paper's recipe (see docs/config.md).
    """

    root: str | None = None
    synthetic: SynthSpec | None = None
    layout: str = "msd"
    foreground_labels: tuple[int, ...] = (1,)
    clip: tuple[float, float] | None = None
    normalise: Literal["zscore", "zscore-nonzero", "none"] = "zscore"
    min_foreground: int = Field(0, ge=0)
    crop: Literal["none", "corners", "random-corner", "centre"] = "none"
    crop_size: int = Field(176, ge=8)
    context_slices: Literal[1, 3] = 1
    fingerprint: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "DataSpec":
        if (self.root is None) == (self.synthetic is None):
            raise ValueError("give exactly one of 'root' and 'synthetic'")
        if self.crop != "none" and self.crop_size % 8:
            raise ValueError(f"crop_size must be divisible by 8, got {self.crop_size}")
        return self


class ProtocolSpec(StrictModel):
    """How cases are split in a fold and how many slices are used for training.

    ``labelled_slices`` consecutive slices are taken from the labelled case(s), starting at
    the first slice that passes the foreground filter (the paper's protocol).
    ``unlabelled_slices`` caps the unlabelled pool (None: every qualifying slice).
    """

    fold: int = Field(0, ge=0)
    labelled_cases: int = Field(1, ge=1)
    unlabelled_cases: int = Field(3, ge=0)
    validation_cases: int = Field(1, ge=1)
    test_cases: int = Field(5, ge=1)
    labelled_slices: int = Field(5, ge=1)
    unlabelled_slices: int | None = Field(None, ge=0)
    split_seed: int = 0


class TrainSpec(StrictModel):
    """Optimisation and test-time settings of the one training loop."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(1, ge=1)
    lr: float = Field(2e-5, gt=0)
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float | None = Field(None, ge=0)
    snapshot: Literal["last-k", "final"] = "last-k"
    snapshot_k: int = Field(10, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = True
    prediction_maps: int = Field(0, ge=0)

    def effective_weight_decay(self) -> float:
        """Weight decay actually used: 1e-5 for AdamW (authors' code) and 0 for Adam unless set."""
        if self.weight_decay is not None:
            return self.weight_decay
        return 1e-5 if self.optimizer == "adamw" else 0.0


class MethodConfig(StrictModel):
    """Base of every method's settings; each method subclasses it with its own fields."""

    name: str


def _parse_method(value: Any) -> Any:
    """Validate a ``method:`` mapping with the config class registered under its name."""
    if isinstance(value, MethodConfig):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise ValueError("method must be a mapping with a 'name' key")
    # Imported here, not at module level: config must not depend on the methods package at
    # import time (methods import config), and importing it registers the methods.
    methods = importlib.import_module("mismatch.methods")
    return methods.method_config_class(value["name"]).model_validate(value)


MethodField = Annotated[SerializeAsAny[MethodConfig], BeforeValidator(_parse_method)]


class TrialSpec(StrictModel):
    """Everything one trial needs: data, split protocol, method, training, identity."""

    study: str = "adhoc"
    data: DataSpec
    protocol: ProtocolSpec = ProtocolSpec()
    method: MethodField
    train: TrainSpec = TrainSpec()

    def trial_id(self) -> str:
        """Content-derived id: the same spec always gives the same id."""
        payload = json.dumps(self.identity_dict(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
        return f"{self.method.name}-{digest}"

    def identity_dict(self) -> dict[str, Any]:
        """The spec as plain data, without fields that do not change the trial's results."""
        data = self.model_dump(mode="json")
        data.pop("study", None)
        data["train"].pop("prediction_maps", None)
        data["train"].pop("device", None)
        return data


def _format_validation_error(
    err: ValidationError, source: str | None, data: dict[str, Any], root: type[BaseModel] | None = None
) -> str:
    lines = []
    for item in err.errors():
        loc = tuple(p for p in item["loc"] if not str(p).startswith("function-"))
        key = ".".join(str(p) for p in loc)
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key" + _suggestion(loc, data, root or TrialSpec)
        lines.append(f"  {key or '<root>'}: {msg}")
    where = f" in {source}" if source else ""
    return f"invalid spec{where}:\n" + "\n".join(lines)


def _suggestion(loc: tuple[Any, ...], data: dict[str, Any], root: type[BaseModel]) -> str:
    """A 'did you mean' hint for a mistyped key, from the fields of the enclosing model."""
    known = _known_keys(loc[:-1], data, root)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _known_keys(parent: tuple[Any, ...], data: dict[str, Any], root: type[BaseModel]) -> list[str]:
    model: Any = root
    if root is TrialSpec and parent[:1] == ("method",):
        try:
            model = importlib.import_module("mismatch.methods").method_config_class(
                data["method"]["name"]
            )
            parent = parent[1:]
        except (KeyError, TypeError):
            return []
    for part in parent:
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None:
            return []
        model = field.annotation
        model = next((a for a in getattr(model, "__args__", ()) if hasattr(a, "model_fields")), model)
    return list(getattr(model, "model_fields", {}))


def load_trial_spec(data: dict[str, Any], source: str | None = None) -> TrialSpec:
    """Build a :class:`TrialSpec` from plain data, raising :class:`SpecError` on any bad key."""
    try:
        return TrialSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(err, source, data)) from None
    except (KeyError, ValueError) as err:
        where = f" in {source}" if source else ""
        raise SpecError(f"invalid spec{where}: {err}") from None


def load_trial_spec_file(path: str | Path) -> TrialSpec:
    """Load a trial spec from a YAML (or JSON) file; errors name the file and the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a trial spec must be a mapping at the top level")
    return load_trial_spec(data, source=str(path))
