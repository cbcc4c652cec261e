"""Two-level (hierarchical) bootstrap: resample training runs, then test cases within each run.

Saravanan, Berman and Sober, "Application of the hierarchical bootstrap to multi-level data in
neuroscience", NBDT 2020: resampling only the lower level (test cases) understates the
uncertainty whenever the upper level (here: training runs) varies. Hand-written because
``scipy.stats.bootstrap`` resamples one level only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

RUN_KEYS = ("fold", "seed", "label_draw")
"""What identifies one training run; runs of two methods with the same key share a data split."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-level bootstrap interval (NaN bounds with fewer than 2 runs)."""

    estimate: float
    low: float
    high: float
    n_runs: int
    n_cases: int


def _groups(values: np.ndarray, runs: np.ndarray) -> list[np.ndarray]:
    frame = pd.DataFrame({"v": np.asarray(values, dtype=float), "r": np.asarray(runs)})
    frame = frame[np.isfinite(frame["v"])]
    return [g.to_numpy() for _, g in frame.groupby("r", sort=True)["v"]]


def hierarchical_interval(values: np.ndarray | Sequence[float], runs: np.ndarray | Sequence[object],
                          confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Interval:
    """Mean over runs of the within-run case mean, with a two-level percentile bootstrap interval.

    Each resample draws R runs with replacement, then, within every drawn run, its n_r cases with
    replacement. NaN values are dropped. Deterministic under ``seed``.
    """
    groups = _groups(np.asarray(values), np.asarray(runs))
    if not groups:
        return Interval(float("nan"), float("nan"), float("nan"), 0, 0)
    n_cases = sum(len(g) for g in groups)
    estimate = float(np.mean([g.mean() for g in groups]))
    if len(groups) < 2:
        return Interval(estimate, float("nan"), float("nan"), 1, n_cases)
    rng = np.random.default_rng(seed)
    stats = _resample(groups, n_resamples, rng)
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), len(groups), n_cases)


def _resample(groups: list[np.ndarray], n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Vectorised two-level resampling: a padded (runs x max cases) array and per-run counts."""
    n_runs, width = len(groups), max(len(g) for g in groups)
    padded = np.zeros((n_runs, width))
    sizes = np.array([len(g) for g in groups])
    for i, g in enumerate(groups):
        padded[i, : len(g)] = g
    chosen = rng.integers(0, n_runs, (n_resamples, n_runs))
    # a case index uniform over the drawn run's own cases: floor(u * n_r)
    u = rng.random((n_resamples, n_runs, width))
    case = np.floor(u * sizes[chosen][..., None]).astype(int)
    picked = padded[chosen[..., None], case]
    mask = np.arange(width)[None, None, :] < sizes[chosen][..., None]
    run_means = (picked * mask).sum(axis=2) / sizes[chosen]
    return run_means.mean(axis=1)


def run_means(frame: pd.DataFrame, value: str = "value", runs: Sequence[str] = RUN_KEYS) -> pd.Series:
    """Mean over cases within each run (index: the run keys); NaN values dropped."""
    clean = frame[np.isfinite(frame[value].astype(float))]
    return clean.groupby(list(runs), sort=True)[value].mean()


def paired_cases(ref: pd.DataFrame, base: pd.DataFrame, runs: Sequence[str] = RUN_KEYS) -> pd.DataFrame:
    """(run, case) units both frames have: run keys, ``case_id``, ``ref``, ``base``, ``diff``, ``run``."""
    keys = [*runs, "case_id"]
    both = ref[[*keys, "value"]].merge(base[[*keys, "value"]], on=keys, suffixes=("_ref", "_base"))
    out = both[keys].copy()
    out["ref"], out["base"] = both["value_ref"].to_numpy(), both["value_base"].to_numpy()
    out["diff"] = out["ref"] - out["base"]
    out["run"] = out[list(runs)].astype(str).agg("/".join, axis=1) if len(out) else pd.Series(dtype=object)
    return out


def paired_run_means(pairs: pd.DataFrame, runs: Sequence[str] = RUN_KEYS) -> pd.DataFrame:
    """One row per paired run: its keys and the means of ``ref``, ``base`` and ``diff`` over its cases."""
    return pairs.groupby(list(runs), sort=True)[["ref", "base", "diff"]].mean().reset_index()
