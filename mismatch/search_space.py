"""Search-space dimensions that method configs declare (torch-free, Optuna-free).

A method config declares ``search_space: ClassVar[dict[str, Dimension]]`` mapping its own
field names to a dimension; :data:`SHARED_SPACE` holds the dimensions every method may tune
(``train.lr``). :mod:`mismatch.study.search` turns each dimension into an Optuna
distribution; the docs table of search spaces is generated from the same declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mismatch.config import set_dotted


@dataclass(frozen=True)
class Dimension:
    """One searched setting: its range (``low``/``high``) or its ``choices``, and ``source``:
    where the range comes from (a paper), printed in the docs table of search spaces."""

    def describe(self) -> str:
        """The range as the docs print it."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the range (used to check enqueued and best values)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Uniform(Dimension):
    """A float, uniform (``log=False``) or log-uniform (``log=True``) on [low, high]."""

    low: float
    high: float
    log: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"bad range [{self.low}, {self.high}] (log={self.log})")

    def describe(self) -> str:
        return f"{'log-uniform' if self.log else 'uniform'} [{self.low:g}, {self.high:g}]"

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high


def LogUniform(low: float, high: float, source: str = "") -> Uniform:  # noqa: N802  (reads as a type)
    """A log-uniform float on [low, high]."""
    return Uniform(low, high, log=True, source=source)


@dataclass(frozen=True)
class IntRange(Dimension):
    """An integer in [low, high] on a grid of ``step``."""

    low: int
    high: int
    step: int = 1
    source: str = ""

    def __post_init__(self) -> None:
        if not self.low < self.high or self.step < 1:
            raise ValueError(f"bad integer range [{self.low}, {self.high}] step {self.step}")

    def describe(self) -> str:
        return f"integer [{self.low}, {self.high}]" + (f" step {self.step}" if self.step != 1 else "")

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high and (value - self.low) % self.step == 0


@dataclass(frozen=True)
class Choice(Dimension):
    """One of a few values (categorical)."""

    choices: tuple[Any, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ValueError("a categorical dimension needs at least two choices")

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))

    def contains(self, value: Any) -> bool:
        return value in self.choices


#: The dimensions every method may tune. Learning rate of Adam, log-uniform over three
#: decades: it spans the MisMatch paper's 2e-5 (Xu et al. 2021), Adam's default 1e-3
#: (Kingma and Ba 2015) and 1e-2, the initial rate of nnU-Net's SGD (Isensee et al. 2021).
SHARED_SPACE: dict[str, Dimension] = {
    "train.lr": LogUniform(1e-5, 1e-2, source="Xu et al. 2021 (2e-5), Kingma and Ba 2015 (1e-3), Isensee et al. 2021 (1e-2)"),
}

TRAIN_PREFIX = "train."


def method_space(config: type) -> dict[str, Dimension]:
    """Everything a method may tune: its declared ``search_space``, then :data:`SHARED_SPACE`."""
    return {**getattr(config, "search_space", {}), **SHARED_SPACE}


def check_space(config: type) -> None:
    """Raise ValueError if a declared dimension names no field of ``config``."""
    fields = getattr(config, "model_fields", {})
    for name in getattr(config, "search_space", {}):
        if name not in fields:
            raise ValueError(f"{config.__name__}.search_space names {name!r}, which is not one of its fields")


def overrides_of(values: dict[str, Any]) -> dict[str, Any]:
    """Searched values as trial-spec overrides: ``train.lr`` -> train section, the rest -> method."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        set_dotted(out, name if name.startswith(TRAIN_PREFIX) else f"method.{name}", value)
    return out
