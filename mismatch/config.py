"""Typed, strictly loaded specifications for a trial.

Every setting a trial needs to be re-run lives in a :class:`TrialSpec`. Specs are pydantic
models with ``extra="forbid"``: an unknown or mistyped key is an error that names the key
(and the file, when loaded from one), never a silently ignored setting.

A method's own settings (``method:`` section) are validated by the config class registered
under its name in :data:`METHODS` (discovered in :mod:`mismatch.methods.configs`), so adding
a method adds its settings without touching this module. Every user-facing name (method,
layout, preset) is checked against its registry at load time; nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from mismatch.registry import Registry, did_you_mean

#: Dataset layouts (:class:`mismatch.data.layouts.Layout`), registered by the modules of
#: :mod:`mismatch.data` (imported on first lookup: numpy only, no torch).
LAYOUTS: Registry[Any] = Registry("layout", discover=("mismatch.data",))


#: A key's place in nested data: mapping keys and list indices, e.g. ``("methods", 0, "model")``.
KeyPath = tuple[Any, ...]


class SpecError(ValueError):
    """A spec could not be loaded: names the file (if any) and every offending key.

    ``problems`` lists the offending keys' paths in the validated data with their messages
    (empty where the error is not about one key), so a caller can say where its file wrote them.
    """

    def __init__(self, message: str, problems: list[tuple[KeyPath, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class StrictModel(BaseModel):
    """Base of every spec: unknown keys and non-finite numbers (``.inf``, ``.nan``, which JSON
    cannot carry to a worker) are errors; instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class SynthSpec(StrictModel):
    """A synthetic phantom dataset generated on the fly (deterministic from ``seed``)."""

    kind: Literal["vessels", "tumours", "organs3d"] = "vessels"
    cases: int = Field(10, ge=1)
    size: tuple[Annotated[int, Field(ge=16)], Annotated[int, Field(ge=16)]] = (64, 64)
    slices: int = Field(24, ge=1)
    seed: int = 0


# Named preparation recipes (the paper's, from the authors' code; see docs/data.md). A preset
# fills every DataSpec field it names that the spec does not set itself; this table is the
# one place their values live.
_DATA_PRESETS: dict[str, dict[str, Any]] = {
    # CARVE14: HU clip, per-case z-score, vessel = artery + vein, slices with > 100 vessel
    # pixels, the four 176x176 corner patches of each slice (paper; `crop: random-corner`
    # is the authors' code), one slice per sample (`context_slices: 3` for adjacent slices).
    "carve": {
        "layout": "carve14", "foreground_labels": [1, 2], "clip": [-950.0, 100.0], "normalise": "zscore",
        "min_foreground": 100, "crop": "corners", "crop_size": 176, "context_slices": 1,
    },
    # BRATS 2018 (HGG): whole tumour = {1, 2, 4}, per-modality z-score over non-zero voxels,
    # centre crop 176, slices with > 5 tumour pixels, 4 modalities as channels.
    "brats": {
        "layout": "brats2018", "foreground_labels": [1, 2, 4], "clip": None, "normalise": "zscore-nonzero",
        "min_foreground": 5, "crop": "centre", "crop_size": 176, "context_slices": 1,
    },
    # The same recipe for the MSD Task01_BrainTumour labels (1 edema, 2 non-enhancing, 3 enhancing).
    "brats-msd": {
        "layout": "msd", "foreground_labels": [1, 2, 3], "clip": None, "normalise": "zscore-nonzero",
        "min_foreground": 5, "crop": "centre", "crop_size": 176, "context_slices": 1,
    },
    # Any MSD / nnU-Net dataset: per-case z-score, label 1 (override foreground_labels),
    # every slice, full slices padded to a multiple of 8.
    "msd": {
        "layout": "msd", "foreground_labels": [1], "clip": None, "normalise": "zscore",
        "min_foreground": 0, "crop": "none", "crop_size": 176, "context_slices": 1,
    },
    # The 2018 Left Atrium benchmark as UA-MT distributes it (la2018-h5): the volumes are
    # already z-scored by UA-MT's preprocessing (`normalise: none`), label 1 is the atrium,
    # every slice is kept; 3D trials on UA-MT's 112 x 112 x 80 patch (D, H, W here).
    "la2018": {
        "layout": "la2018-h5", "foreground_labels": [1], "clip": None, "normalise": "none",
        "min_foreground": 0, "crop": "none", "context_slices": 1, "spatial_dims": 3, "patch_size": [80, 112, 112],
    },
    # ACDC as SSL4MIS distributes it (acdc-h5): min-max normalised volumes (`normalise: none`),
    # every slice, full slices padded; the three foreground classes RV, Myo, LV (C = 4).
    "acdc": {
        "layout": "acdc-h5", "classes": [1, 2, 3], "clip": None, "normalise": "none", "min_foreground": 0,
        "crop": "none", "context_slices": 1,
    },
}

# Named split protocols of the paper. `unlabelled_cases: rest` = every case that is not
# labelled, validation or test.
_PROTOCOL_PRESETS: dict[str, dict[str, Any]] = {
    # CARVE14 10-fold cross-validation: fold f labels case f; 3 unlabelled, 1 validation, 5 test.
    "carve-10fold": {"labelled_cases": 1, "unlabelled_cases": 3, "validation_cases": 1, "test_cases": 5},
    # BRATS 2018: 1 labelled case (its first 20 tumour slices), 2 validation, 40 test cases,
    # a pool of 3100 unlabelled slices from the rest (the paper: 3100 / 4650 / 6200).
    "brats": {
        "labelled_cases": 1, "unlabelled_cases": "rest", "validation_cases": 2, "test_cases": 40,
        "labelled_slices": 20, "unlabelled_slices": 3100,
    },
    # The benchmarks' fixed splits from their list files (docs/data.md, "Benchmarks"): the first
    # 8 / 16 cases of LA's train.list labelled (UA-MT), the rest unlabelled but the last 4,
    # which validate (UA-MT has no validation set), tested on the 20 cases of test.list.
    "la-8": {"split": "lists", "labelled_cases": 8, "unlabelled_cases": "rest", "validation_cases": 4,
             "labelled_slices": None},
    "la-16": {"split": "lists", "labelled_cases": 16, "unlabelled_cases": "rest", "validation_cases": 4,
              "labelled_slices": None},
    # ACDC: every slice of the first 3 / 7 patients of train.list labelled (SSL4MIS's 68 / 136
    # slices), the other training patients unlabelled, validated on val.list, tested on test.list.
    "acdc-3": {"split": "lists", "labelled_cases": 3, "unlabelled_cases": "rest", "labelled_slices": None},
    "acdc-7": {"split": "lists", "labelled_cases": 7, "unlabelled_cases": "rest", "labelled_slices": None},
}


def _preset_registry(kind: str, builtins: dict[str, dict[str, Any]]) -> Registry[dict[str, Any]]:
    registry: Registry[dict[str, Any]] = Registry(kind)
    for name, values in builtins.items():
        registry.register(name, values)
    return registry


#: Data presets by name (``DataSpec.preset``); ``DATA_PRESETS.register(name, values)`` adds one.
DATA_PRESETS = _preset_registry("data preset", _DATA_PRESETS)
#: Protocol presets by name (``ProtocolSpec.preset``).
PROTOCOL_PRESETS = _preset_registry("protocol preset", _PROTOCOL_PRESETS)


def _expand_preset(value: Any, presets: Registry[dict[str, Any]], skip: tuple[str, ...] = ()) -> Any:
    """``{preset: NAME, ...}`` -> the preset's values under the keys the mapping sets itself."""
    if not isinstance(value, dict) or value.get("preset") is None:
        return value
    filled = {k: v for k, v in presets.get(value["preset"]).items() if k not in skip}
    return {**filled, **value}


class DataSpec(StrictModel):
    """Where the images come from and how slices are prepared from them.

    Exactly one source: ``root`` (a raw dataset in ``layout``), ``synthetic`` (a generated
    phantom, always in the msd layout) or ``prepared`` (a cache written by
    ``mismatch data prepare``, whose recipe must equal this spec's). ``preset`` names a
    recipe of :data:`DATA_PRESETS` that fills the fields the spec does not set. The
    preparation fields follow the paper's recipe (see docs/config.md and docs/data.md).
    ``classes`` (None: the binary task of ``foreground_labels``) makes a multi-class task:
    label value ``classes[i]`` becomes class ``i + 1``, any other value class 0, so
    :attr:`num_classes` is ``len(classes) + 1`` (docs/data.md, "Multi-class tasks").
    """

    root: str | None = None
    synthetic: SynthSpec | None = None
    prepared: str | None = None
    preset: str | None = None
    layout: str = "msd"
    foreground_labels: tuple[int, ...] = (1,)
    clip: tuple[float, float] | None = None
    normalise: Literal["zscore", "zscore-nonzero", "none"] = "zscore"
    min_foreground: int = Field(0, ge=0)
    crop: Literal["none", "corners", "random-corner", "centre"] = "none"
    crop_size: int = Field(176, ge=8)
    context_slices: Literal[1, 3] = 1
    label_values: tuple[int, ...] | None = None
    fingerprint: str | None = None
    classes: tuple[int, ...] | None = None
    # 3D trials (docs/data.md, "3D trials"): whole volumes, trained on patches (D, H, W, as the
    # arrays), tested with sliding-window inference.
    spatial_dims: Literal[2, 3] = 2
    patch_size: tuple[Annotated[int, Field(ge=16)], Annotated[int, Field(ge=16)], Annotated[int, Field(ge=16)]] | None = None
    patch_foreground: float = Field(0.5, ge=0, le=1)
    sw_overlap: float = Field(0.5, ge=0, lt=1)
    sw_mode: Literal["gaussian", "constant"] = "gaussian"

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, value: Any) -> Any:
        synthetic = isinstance(value, dict) and value.get("synthetic") is not None
        return _expand_preset(value, DATA_PRESETS, skip=("layout",) if synthetic else ())

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, layout: str) -> str:
        return LAYOUTS.check(layout)

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if sum(x is not None for x in (self.root, self.synthetic, self.prepared)) != 1:
            raise ValueError("give exactly one of 'root' and 'synthetic' (or 'prepared', a cache written by "
                             "`mismatch data prepare`)")
        if self.synthetic is not None and self.layout != "msd":
            raise ValueError(f"synthetic phantoms are written in the msd layout, not {self.layout!r}")
        if self.crop != "none" and self.crop_size % 8:
            raise ValueError(f"crop_size must be divisible by 8, got {self.crop_size}")
        self._check_classes()
        self._check_dims()
        return self

    def _check_classes(self) -> None:
        """``classes``: distinct positive label values; without them, a multi-class layout needs
        ``foreground_labels`` (a multi-class label map is never merged into one class silently)."""
        if self.classes is not None:
            if not self.classes or len(set(self.classes)) != len(self.classes) or min(self.classes) < 1:
                raise ValueError(f"classes must be distinct label values > 0 (0 is background), got {list(self.classes)}")
            return
        names = getattr(LAYOUTS.get(self.layout), "classes", ())
        if len(names) > 1 and "foreground_labels" not in self.model_fields_set:
            labels = ", ".join(f"{v} {n}" for v, n in enumerate(names, 1))
            raise ValueError(f"the {self.layout} labels {{{labels}}} are multi-class: give classes (e.g. "
                             f"{list(range(1, len(names) + 1))}) for a {len(names) + 1}-class task, or "
                             f"foreground_labels (e.g. [{len(names)}]) for one binary task")

    @property
    def num_classes(self) -> int:
        """C, the classes a network predicts: background plus each of ``classes`` (2 when binary)."""
        return 2 if self.classes is None else len(self.classes) + 1

    def _check_dims(self) -> None:
        """3D settings only with ``spatial_dims: 3`` (no setting silently ignored), and the
        2D-only preparation steps only with 2."""
        if self.spatial_dims == 2:
            # values, not keys: a stored 2D spec (model_dump) carries the defaults and reloads
            given = [k for k in VOLUME_FIELDS if getattr(self, k) != type(self).model_fields[k].default]
            if given:
                raise ValueError(f"{', '.join(given)} apply to spatial_dims: 3 (3D trials); remove them or set spatial_dims: 3")
            return
        if self.patch_size is None:
            raise ValueError("spatial_dims: 3 needs patch_size (D, H, W), e.g. [80, 112, 112]")
        if any(n % 16 for n in self.patch_size):
            raise ValueError(f"each patch_size entry must be divisible by 16 (four poolings), got {list(self.patch_size)}")
        if math.prod(n // 16 for n in self.patch_size) < 2:
            # InstanceNorm cannot normalise the one voxel a 16 x 16 x 16 patch leaves at the bottleneck
            raise ValueError(f"patch_size {list(self.patch_size)} leaves one voxel after four poolings; make at least "
                             "one entry 32 or more")
        if self.prepared is not None:
            raise ValueError("spatial_dims: 3 reads whole volumes from root or synthetic, not a prepared slice cache")
        if self.crop != "none" or self.context_slices != 1:
            raise ValueError("crop and context_slices are 2D slice settings; spatial_dims: 3 trains on patches of "
                             "whole volumes (crop: none, context_slices: 1)")


#: DataSpec fields of 3D trials; left out of a 2D trial's identity, so 2D trial ids are unchanged.
VOLUME_FIELDS = ("spatial_dims", "patch_size", "patch_foreground", "sw_overlap", "sw_mode")


class ProtocolSpec(StrictModel):
    """How cases are split in a fold and how many slices are used for training.

    ``labelled_slices`` consecutive slices are taken from the labelled case(s), starting at
    the first slice that passes the foreground filter (the paper's protocol).
    ``unlabelled_slices`` caps the unlabelled pool (None: every qualifying slice).
    ``unlabelled_cases: rest`` makes every case not otherwise used unlabelled. ``preset``
    names a protocol of :data:`PROTOCOL_PRESETS` that fills the fields the spec does not set.
    ``label_draw`` picks which labels a fold uses: draw 0 is the paper's choice (the fold's
    labelled case(s), from their first qualifying slice); draw d > 0 deterministically picks
    another labelled case and first labelled slice (:mod:`mismatch.data.selection`).
    ``labelled_slices: null`` labels every qualifying slice of the labelled cases.

    ``split`` says where the cases' roles come from: ``folds`` (cross-validation folds of the
    sorted cases, :mod:`mismatch.data.splits`) or ``lists`` (a benchmark's list files, e.g.
    LA's ``train.list`` / ``test.list``: one fixed split, fold 0 only, seeds vary). Under
    ``lists`` the first ``labelled_cases`` training cases (patients, for ACDC) are labelled,
    ``test.list`` is the test set and ``val.list`` (where the layout has one) the validation
    set; ``test_cases`` is not used, and ``validation_cases`` only without a ``val.list``.
    """

    preset: str | None = None
    split: Literal["folds", "lists"] = "folds"
    fold: int = Field(0, ge=0)
    labelled_cases: int = Field(1, ge=1)
    unlabelled_cases: Annotated[int, Field(ge=0)] | Literal["rest"] = 3
    validation_cases: int = Field(1, ge=1)
    test_cases: int = Field(5, ge=1)
    # The held-out tuning split (docs/studies.md): cases set aside from every fold, scored
    # by a search (validate_on: tuning) and never a test case of the table.
    tuning_cases: int = Field(0, ge=0)
    validate_on: Literal["fold", "tuning"] = "fold"
    labelled_slices: int | None = Field(5, ge=1)
    unlabelled_slices: int | None = Field(None, ge=0)
    split_seed: int = 0
    label_draw: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, value: Any) -> Any:
        return _expand_preset(value, PROTOCOL_PRESETS)

    @model_validator(mode="after")
    def _tuning_split(self) -> ProtocolSpec:
        if self.validate_on == "tuning" and not self.tuning_cases:
            raise ValueError("validate_on: tuning needs tuning_cases > 0 (the cases set aside for tuning)")
        if self.split == "lists" and self.fold:
            raise ValueError(f"split: lists is one fixed split: fold {self.fold} does not exist (only fold 0; "
                             "vary train.seed instead)")
        if self.split == "lists" and self.tuning_cases:
            raise ValueError("split: lists takes no tuning_cases (the lists fix every case's role)")
        return self


#: Steps between two checks for a NaN or infinite loss (``train.check_every``).
DEFAULT_CHECK_EVERY = 25


class TrainSpec(StrictModel):
    """Optimisation and test-time settings of the one training loop.

    The defaults are the paper's (Adam at a constant learning rate, float32, no clipping);
    ``schedule``, ``clip_grad_norm``, ``precision`` and the SGD settings are the training
    hooks (docs/config.md). Settings that apply to one optimiser only default to ``None``
    and are errors when set for another, so no setting is silently ignored.
    ``nsd_tolerance_mm`` is the tolerance of the per-case normalised surface Dice (``nsd`` in
    the cases table; docs/results-schema.md says why 1 mm by default).

    ``stream`` is the protocol that turns slices into optimiser steps (docs/methods.md):
    ``streaming`` (the paper's: every labelled and unlabelled slice once per epoch in one
    shuffled stream) or ``two-stream`` (every step a labelled batch, cycling the labelled
    slices, plus an unlabelled batch for semi-supervised methods; an epoch is one pass over
    the unlabelled pool, and supervised methods take as many steps). Under ``streaming``,
    ``budget`` says what supervised methods stream: ``paper`` (the labelled slices once per
    epoch) or ``steps`` (labelled slices, cycled, up to the semi-supervised stream's length).
    The defaults are today's (and the paper's); new studies set ``stream: two-stream``.
    """

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(1, ge=1)
    lr: float = Field(2e-5, gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float | None = Field(None, ge=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    nesterov: bool = False
    schedule: ScheduleSpec = Field(default_factory=lambda: ScheduleSpec())
    clip_grad_norm: float | None = Field(None, gt=0)
    precision: Literal["none", "bf16", "fp16"] = "none"
    # Where the GPU hot path keeps a 2D trial's slices (mismatch.trial.batches.device_slices); the rows
    # are the same either way, so it is not part of the trial's identity.
    data_on_device: Literal["auto", "on", "off"] = "auto"
    check_every: int = Field(DEFAULT_CHECK_EVERY, ge=1)
    snapshot: Literal["last-k", "final"] = "last-k"
    snapshot_k: int = Field(10, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = True
    prediction_maps: int = Field(4, ge=0, le=64)
    nsd_tolerance_mm: float = Field(1.0, gt=0)
    stream: Literal["streaming", "two-stream"] = "streaming"
    budget: Literal["paper", "steps"] = "paper"

    @model_validator(mode="after")
    def _consistent(self) -> TrainSpec:
        if self.stream == "two-stream" and self.budget != "paper":
            raise ValueError("budget applies to stream: streaming (under two-stream every method takes the "
                             "same steps); remove it")
        if self.optimizer != "sgd" and (self.momentum is not None or self.nesterov):
            raise ValueError(f"momentum and nesterov apply to optimizer: sgd, not {self.optimizer!r}")
        if self.nesterov and self.effective_momentum() == 0:
            raise ValueError("nesterov needs a momentum above 0")
        if self.precision != "none" and self.device == "cpu":
            raise ValueError(f"precision: {self.precision} needs CUDA; with device: cpu use precision: none")
        return self

    def effective_weight_decay(self) -> float:
        """Weight decay actually used: 1e-5 for AdamW (authors' code) and 0 for Adam unless set."""
        if self.weight_decay is not None:
            return self.weight_decay
        return 1e-5 if self.optimizer == "adamw" else 0.0

    def effective_momentum(self) -> float:
        """SGD momentum actually used: 0.9 (UniMatch, CPS) unless set; 0 for the Adam family."""
        if self.momentum is not None:
            return self.momentum
        return 0.9 if self.optimizer == "sgd" else 0.0

    def identity_dict(self) -> dict[str, Any]:
        """This section of a trial's identity: without the fields that do not change results
        (``device``, ``prediction_maps``, ``check_every``) and without the training hooks,
        ``nsd_tolerance_mm`` and the stream protocol at their defaults, so specs written before
        they existed keep their trial ids (``streaming`` with ``paper`` is today's loop)."""
        data = self.model_dump(mode="json")
        for key in ("prediction_maps", "device", "check_every", "data_on_device"):
            data.pop(key)
        defaults = TrainSpec().model_dump(mode="json")
        for key in ("momentum", "nesterov", "schedule", "clip_grad_norm", "precision", "nsd_tolerance_mm", "stream",
                    "budget"):
            if data[key] == defaults[key]:
                data.pop(key)
        return data


class ScheduleSpec(StrictModel):
    """The learning-rate schedule: one PyTorch scheduler stepped after every optimiser step.

    ``constant`` (default) keeps ``train.lr``; ``poly`` multiplies it by
    ``(1 - t / T) ** power`` (UniMatch, CPS); ``cosine`` anneals it to ``min_lr`` over T;
    ``step`` multiplies it by ``gamma`` every ``step_size``. T is the training length after
    the warm-up. ``warmup`` > 0 first raises the rate linearly from ``warmup_start`` x lr to
    lr. ``warmup`` and ``step_size`` count ``unit``s (epochs or optimiser steps). Settings of
    another schedule are ``None`` and are errors when set.
    """

    name: Literal["constant", "poly", "cosine", "step"] = "constant"
    power: float | None = Field(None, gt=0)
    min_lr: float | None = Field(None, ge=0)
    step_size: int | None = Field(None, ge=1)
    gamma: float | None = Field(None, gt=0, le=1)
    warmup: int = Field(0, ge=0)
    warmup_start: float = Field(0.001, gt=0, le=1)
    unit: Literal["epochs", "steps"] = "epochs"

    @model_validator(mode="after")
    def _settings_of_this_schedule(self) -> ScheduleSpec:
        applies = {"power": "poly", "min_lr": "cosine", "step_size": "step", "gamma": "step"}
        for key, name in applies.items():
            if getattr(self, key) is not None and self.name != name:
                raise ValueError(f"schedule.{key} applies to schedule name: {name}, not {self.name!r}")
        if self.name == "step" and self.step_size is None:
            raise ValueError("schedule name: step needs step_size")
        return self

    def effective_power(self) -> float:
        """The poly schedule's power: 0.9 (UniMatch, CPS) unless set."""
        return 0.9 if self.power is None else self.power

    def effective_min_lr(self) -> float:
        """The cosine schedule's final learning rate: 0 unless set."""
        return 0.0 if self.min_lr is None else self.min_lr

    def effective_gamma(self) -> float:
        """The step schedule's factor: 0.1 unless set."""
        return 0.1 if self.gamma is None else self.gamma


TrainSpec.model_rebuild()


class MethodConfig(StrictModel):
    """Base of every method's settings; each method subclasses it with its own fields.

    A subclass is THE registry entry of its method (:data:`METHODS`) and carries the
    method's metadata as class variables, so a spec is validated without importing torch:
    ``implementation`` (the torch class, a lazy ``"module:Class"`` string or the class),
    ``uses_unlabelled``, ``reference``, ``summary`` (what the unlabelled slices train, for
    the docs), ``requires``: the capabilities a network must provide (e.g.
    ``{"decoders": 2}``), checked against the network registry when ``model`` is a field, and
    ``spatial_dims``: the image dimensions the method supports (2D slices only by default; a
    trial on 3D data refuses a method without 3 here).
    ``fusable``: whether trials of the method may train fused (several trials as one model,
    :mod:`mismatch.fusion`); built-in methods that cannot are listed, with the reason, in
    :data:`mismatch.fusion.support.NOT_FUSABLE`.
    """

    implementation: ClassVar[str | type | None] = None
    uses_unlabelled: ClassVar[bool] = True
    reference: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    requires: ClassVar[dict[str, Any]] = {}
    spatial_dims: ClassVar[tuple[int, ...]] = (2,)
    fusable: ClassVar[bool] = True
    #: Settings added after trials were stored, dropped from the trial id at these values so
    #: stored trials keep their ids (e.g. MTA's ``training: joint``).
    identity_defaults: ClassVar[dict[str, Any]] = {}

    name: str


#: Methods by name: each entry is the method's strict, torch-free config class. The modules
#: of :mod:`mismatch.methods.configs` register themselves on first lookup.
METHODS: Registry[type[MethodConfig]] = Registry("method", discover=("mismatch.methods.configs",))


def _parse_method(value: Any) -> Any:
    """Validate a ``method:`` mapping with the config class registered under its name."""
    if isinstance(value, MethodConfig):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise ValueError("method must be a mapping with a 'name' key")
    return METHODS.get(value["name"]).model_validate(value)


def methods_for_dims(spatial_dims: int) -> list[str]:
    """Names of the registered methods that support ``spatial_dims``-dimensional data."""
    return [name for name, config in METHODS.items() if spatial_dims in config.spatial_dims]


MethodField = Annotated[SerializeAsAny[MethodConfig], BeforeValidator(_parse_method)]


class TrialSpec(StrictModel):
    """Everything one trial needs: data, split protocol, method, training, identity."""

    study: str = "adhoc"
    data: DataSpec
    protocol: ProtocolSpec = ProtocolSpec()
    method: MethodField
    train: TrainSpec = TrainSpec()

    @model_validator(mode="after")
    def _method_fits_data(self) -> TrialSpec:
        dims = getattr(self.data, "spatial_dims", 2)
        supported = type(self.method).spatial_dims
        if dims not in supported:
            raise ValueError(f"method {self.method.name!r} supports {' and '.join(f'{d}D' for d in supported)} data only, "
                             f"but data.spatial_dims is {dims}; {dims}D methods: {', '.join(methods_for_dims(dims)) or 'none'}")
        return self

    def trial_id(self) -> str:
        """Content-derived id: the same spec always gives the same id."""
        payload = json.dumps(self.identity_dict(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
        return f"{self.method.name}-{digest}"

    def identity_dict(self) -> dict[str, Any]:
        """The spec as plain data, without fields that do not change the trial's results."""
        data = self.model_dump(mode="json")
        data.pop("study", None)
        # Presets only fill other fields, and label_values only validates: neither changes
        # results. prepared is kept when set (like root); unset new keys keep old trial ids.
        for section, keys in (("data", ("preset", "label_values")), ("protocol", ("preset",))):
            for key in keys:
                data[section].pop(key, None)
        if data["protocol"].get("label_draw") == 0:
            data["protocol"].pop("label_draw")
        for key, default in self.method.identity_defaults.items():
            if data["method"].get(key) == default:
                data["method"].pop(key)
        if data["data"].get("prepared") is None:
            data["data"].pop("prepared", None)
        if data["data"].get("classes") is None:  # binary tasks keep their trial ids
            data["data"].pop("classes", None)
        if data["data"].get("spatial_dims", 2) == 2:
            for key in VOLUME_FIELDS:
                data["data"].pop(key, None)
        data["train"] = self.train.identity_dict()
        for key, default in (("tuning_cases", 0), ("validate_on", "fold"), ("split", "folds")):  # old trial ids
            if data["protocol"].get(key) == default:
                data["protocol"].pop(key)
        return data


def validation_problems(
    err: ValidationError, data: dict[str, Any], root: type[BaseModel] | None = None
) -> list[tuple[KeyPath, str]]:
    """Each error of ``err`` as (the key's path in ``data``, a plain message)."""
    problems = []
    for item in err.errors():
        loc = tuple(p for p in item["loc"] if not str(p).startswith("function-"))
        msg = item["msg"]
        if item["type"] == "value_error" and "error" in item.get("ctx", {}):
            msg = _plain(item["ctx"]["error"])  # not pydantic's "Value error, ..." prefix
        if item["type"] == "extra_forbidden":
            msg = "unknown key" + _suggestion(loc, data, root or TrialSpec)
        problems.append((loc, msg))
    return problems


def _format_validation_error(
    err: ValidationError, source: str | None, data: dict[str, Any], root: type[BaseModel] | None = None
) -> str:
    lines = [f"  {'.'.join(str(p) for p in loc) or '<root>'}: {msg}" for loc, msg in validation_problems(err, data, root)]
    where = f" in {source}" if source else ""
    return f"invalid spec{where}:\n" + "\n".join(lines)


def _plain(err: BaseException) -> str:
    """An error's message as written: ``str(KeyError("x"))`` would add repr quotes."""
    if isinstance(err, KeyError) and len(err.args) == 1:
        return str(err.args[0])
    return str(err)


def _suggestion(loc: tuple[Any, ...], data: dict[str, Any], root: type[BaseModel]) -> str:
    """A 'did you mean' hint for a mistyped key, from the fields of the enclosing model."""
    return did_you_mean(str(loc[-1]), _known_keys(loc[:-1], data, root))


def _known_keys(parent: tuple[Any, ...], data: dict[str, Any], root: type[BaseModel]) -> list[str]:
    model: Any = root
    if root is TrialSpec and parent[:1] == ("method",):
        try:
            model = METHODS.get(data["method"]["name"])
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
        raise SpecError(_format_validation_error(err, source, data), validation_problems(err, data)) from None
    except (KeyError, ValueError) as err:
        where = f" in {source}" if source else ""
        raise SpecError(f"invalid spec{where}: {_plain(err)}") from None


def load_data_spec(data: dict[str, Any], source: str | None = None) -> DataSpec:
    """Build a :class:`DataSpec` from plain data, raising :class:`SpecError` on any bad key."""
    try:
        return DataSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(err, source, data, DataSpec)) from None
    except (KeyError, ValueError) as err:
        where = f" in {source}" if source else ""
        raise SpecError(f"invalid data spec{where}: {_plain(err)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error
    (SafeLoader silently keeps the last: a second ``name:`` would move a study's results)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merge keys may repeat; their keys are flattened by the base class
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class raises its own error
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} on line {line} (first given on line {first})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree``'s key at the dotted path ``dotted`` (``train.lr``) to ``value``, creating the
    sections on the way: the one setter of ``--set``, a study's grid axes and searched values.
    A path through a value that is not a section is a :class:`SpecError` naming both."""
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise SpecError(f"{dotted}: '{key}' is not a section")
    node[leaf] = value


def parse_yaml(text: str) -> Any:
    """YAML text parsed as by ``yaml.safe_load``, except that a key given twice in one
    mapping raises a ``yaml.YAMLError`` naming the key and its line."""
    return parse_yaml_lines(text)[0]


def parse_yaml_lines(text: str) -> tuple[Any, dict[KeyPath, int]]:
    """:func:`parse_yaml`'s data, and the 1-based line of every key and list item in it
    (``{("base", "train", "lr"): 12, ("methods", 0): 15, ...}``), from one parse."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, key_lines(node)


def key_lines(root: yaml.Node | None) -> dict[KeyPath, int]:
    """The line of every mapping key and sequence item under a composed YAML node (mapping
    keys by their text; ``<<`` merge keys are skipped). Iterative: deep nesting costs no stack;
    a node reached again through an alias is not walked again (aliases may multiply a document)."""
    lines: dict[KeyPath, int] = {}
    stack: list[tuple[KeyPath, yaml.Node]] = [((), root)] if root is not None else []
    seen: set[int] = set()
    while stack:
        path, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            children = [((*path, key.value), key, value) for key, value in node.value
                        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge"]
        elif isinstance(node, yaml.SequenceNode):
            children = [((*path, i), item, item) for i, item in enumerate(node.value)]
        else:
            continue
        for child_path, mark_node, value in children:
            lines.setdefault(child_path, mark_node.start_mark.line + 1)
            stack.append((child_path, value))
    return lines


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file's top-level mapping; a missing file, bad YAML, a key given twice in one
    mapping, nesting too deep to parse or a non-mapping is a :class:`SpecError` naming the
    file (``what`` says what the file should be)."""
    return read_yaml_lines(path, what)[0]


def read_yaml_lines(path: str | Path, what: str) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    """:func:`read_yaml_mapping`'s mapping and the line of each key in it (:func:`key_lines`)."""
    path = Path(path)
    try:
        data, lines = parse_yaml_lines(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{what} file not found: {path}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path} is not valid YAML: {err}") from None
    except RecursionError:
        raise SpecError(f"{path}: the YAML is nested too deeply to read (a {what} needs only a few levels)") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a {what} must be a mapping at the top level")
    return data, lines


def load_trial_spec_file(path: str | Path) -> TrialSpec:
    """Load a trial spec from a YAML (or JSON) file; errors name the file and the key."""
    return load_trial_spec(read_yaml_mapping(path, "trial spec"), source=str(path))
