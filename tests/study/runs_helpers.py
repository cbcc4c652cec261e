"""Study folders with known per-(run, case) values, for the planner and the sequential tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.synthetic_study import SyntheticGrid, write_synthetic_study

NAN = float("nan")
VARIANTS = (("sup1", "unet", NAN), ("mismatch", "mm", 0.002))
CASES = 5  # the synthetic images test case0..case4 in every trial


def write_runs(root: Path, study: str, replicate: str, replicates: tuple[int, ...],
               diffs: dict[int, np.ndarray], base: float = 0.5, count: int = 10) -> Path:
    """A study folder of Sup1 and MisMatch whose ``cases`` table holds chosen values.

    Per replicate r (a fold or a seed, the other held at 0), Sup1 scores ``base`` on every case
    and MisMatch ``base + diffs[r][case]``: the paired per-case differences are exactly ``diffs``.
    """
    grid = SyntheticGrid(variants=VARIANTS, counts=(count,), replicates=replicates, replicate=replicate,
                         study=study, images_per_trial=CASES)
    folder = write_synthetic_study(root, grid, predictions=False)
    trials = pd.concat(pd.read_parquet(p) for p in (folder / "trials").glob("*.parquet"))
    (folder / "cases").mkdir(exist_ok=True)
    for _, t in trials.iterrows():
        shift = diffs[int(t[replicate])] if t["method"] == "mismatch" else np.zeros(CASES)
        iou = np.clip(base + shift, 0.0, 1.0)
        pd.DataFrame({"trial_id": t["trial_id"], "case_id": [f"case{i}" for i in range(CASES)], "iou": iou,
                      "dice": 2 * iou / (1 + iou)}).to_parquet(folder / "cases" / f"{t['trial_id']}.parquet",
                                                               index=False)
    return folder


def exact_runs(n_runs: int, run_sd: float, case_sd: float, delta: float = 0.0, seed: int = 0) -> dict[int, np.ndarray]:
    """Per-case differences whose per-run means have exactly mean ``delta`` and sample SD ``run_sd``
    (cases scatter with SD ``case_sd`` around their run's mean, summing to it exactly)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n_runs)
    z = (z - z.mean()) / z.std(ddof=1)
    out = {}
    for r in range(n_runs):
        noise = rng.normal(0, case_sd, CASES)
        out[r] = delta + run_sd * z[r] + noise - noise.mean()
    return out
