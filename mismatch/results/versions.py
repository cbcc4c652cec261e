"""Reading rows of older schema versions: each version step is one :class:`Upgrade`.

Readers call :func:`read_columns` for the names to ask a file for (a column renamed since is
asked for under its old name too) and :func:`upgrade` on what they read. Rows newer than this
code are refused rather than misread. When a stored column changes, bump the version and add
the step here (docs/results-schema.md).

Version 1 -> 2: every table gains the identity column ``label_draw`` (0: version-1 trials
used the paper's labels); trials rows gain ``stream`` = ``"streaming"`` and ``budget`` =
``"paper"`` (the only protocol version-1 code had) and ``optimizer_steps`` /
``labelled_presentations`` = -1 (not counted by version-1 code; -1, never a guess).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mismatch.results.schema import IDENTITY, SCHEMA_VERSION, TABLES

VERSION_COLUMN = "schema_version"
ASSUMED_VERSION = 1
"""Version of rows without a ``schema_version`` column (merged files that dropped it)."""


@dataclass(frozen=True)
class Upgrade:
    """How rows of schema version ``source`` become rows of version ``source + 1``.

    ``renamed`` maps old column names to new ones; ``added`` gives, per table, the value of a
    column that version ``source`` lacked; ``transform(frame, table)`` does anything else. Each
    sees only the columns that were read, so it must skip a column that is absent.
    """

    source: int
    renamed: Mapping[str, str] = field(default_factory=dict)
    added: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    transform: Callable[[pd.DataFrame, str], pd.DataFrame] | None = None

    def apply(self, frame: pd.DataFrame, table: str) -> pd.DataFrame:
        """The rows, one version newer."""
        frame = frame.rename(columns={o: n for o, n in self.renamed.items() if o in frame})
        for column, value in self.added.get(table, {}).items():
            if column not in frame:
                frame[column] = value
        if self.transform is not None:
            frame = self.transform(frame, table)
        frame[VERSION_COLUMN] = self.source + 1
        return frame


NOT_COUNTED = -1
"""``optimizer_steps`` / ``labelled_presentations`` of rows written before the loop counted them."""


def identity_first(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """The identity columns that were read first, in the schema's order, then the rest."""
    ident = [c for c in IDENTITY if c in frame]
    return frame[ident + [c for c in frame.columns if c not in ident]]


_V1_TO_V2 = Upgrade(
    1,
    added={
        **{table: {"label_draw": 0} for table in TABLES},
        "trials": {"label_draw": 0, "stream": "streaming", "budget": "paper",
                   "optimizer_steps": NOT_COUNTED, "labelled_presentations": NOT_COUNTED},
    },
    transform=identity_first,
)

UPGRADES: dict[int, Upgrade] = {1: _V1_TO_V2}
"""``UPGRADES[v]`` turns version-``v`` rows into version ``v + 1`` rows."""


def read_columns(wanted: Iterable[str]) -> list[str]:
    """Columns to read from a file of any version for ``wanted`` (old names of renamed ones added)."""
    names = list(dict.fromkeys([*wanted, VERSION_COLUMN]))
    for step in UPGRADES.values():
        names += [old for old, new in step.renamed.items() if new in names and old not in names]
    return names


def row_versions(frame: pd.DataFrame) -> pd.Series:
    """Each row's schema version (``ASSUMED_VERSION`` where the column is absent or null)."""
    if VERSION_COLUMN not in frame:
        return pd.Series(ASSUMED_VERSION, index=frame.index, dtype="int64")
    return pd.to_numeric(frame[VERSION_COLUMN], errors="coerce").fillna(ASSUMED_VERSION).astype("int64")


def upgrade(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Rows of ``table`` at any known version, as rows of ``SCHEMA_VERSION`` (row order kept).

    Rows already at the current version come back unchanged (the same object when all are).
    """
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    versions = row_versions(frame)
    newer = sorted(set(versions[versions > SCHEMA_VERSION]))
    if newer:
        raise ValueError(f"{table} rows have schema version {newer[0]}, newer than this code's "
                         f"{SCHEMA_VERSION}: update mismatch to read them")
    if (versions == SCHEMA_VERSION).all():
        return frame
    original = frame.index
    frame = frame.reset_index(drop=True)  # positions: the index may repeat across files
    parts = []
    for version, part in frame.groupby(versions.to_numpy(), sort=True):
        for step in range(int(version), SCHEMA_VERSION):
            if step not in UPGRADES:
                raise ValueError(f"no upgrade from schema version {step} to {step + 1}")
            part = UPGRADES[step].apply(part.copy(), table)
        parts.append(part)
    out = pd.concat(parts).sort_index()
    out.index = original
    return out
