"""Fixtures of the report tests: small schema-conforming studies written to temporary folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.synthetic_study import SyntheticGrid, write_synthetic_study

HOSTILE_METHOD = "<script>alert(1)</script>"
HOSTILE_MODEL = "</script><img src=x onerror=\"window.__xss=1\">"
LATEX_HOSTILE = r"\input{/etc/passwd}$&_%#"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: opens a report in headless Chromium (needs chromium, chromedriver, selenium)")


def carve_grid(study: str = "carve-like") -> SyntheticGrid:
    """A small CARVE-like grid: 3 methods (one hostile), 2 counts, 4 folds, alpha and decoder ablations."""
    nan = float("nan")
    variants = (("sup1", "unet", nan), (HOSTILE_METHOD, HOSTILE_MODEL, nan), ("mismatch", "mm", 0.002))
    extra = (("mismatch", "mm", 0.0, 5), ("mismatch", "mm", 0.004, 5),
             ("mismatch", "mm-a", 0.002, 5), ("mismatch", "mm-c", 0.002, 5))
    return SyntheticGrid(variants, counts=(5, 10), replicates=(0, 1, 2, 3), images_per_trial=6,
                         study=study, extra=extra)


@pytest.fixture(scope="session")
def carve_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder with two failed trials (the last two of the grid: mm-c folds 2 and 3)."""
    root = tmp_path_factory.mktemp("storage")
    base = write_synthetic_study(root, carve_grid(), failed=2, prediction_replicates=(0,))
    _write_search(base / "optuna" / "journal.log")
    return base


def _write_search(journal: Path) -> None:
    """A small Optuna search over alpha, stored like the study runner stores it."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="alpha-search", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 0.6 - (np.log10(t.suggest_float("method.alpha", 1e-4, 1e-2, log=True)) + 2.7) ** 2,
                   n_trials=6)


@pytest.fixture(scope="session")
def make_rows():  # noqa: ANN201 - returns the helper below
    """The :func:`image_rows` helper, for tests that build hand-computed fixtures."""
    return image_rows


@pytest.fixture(scope="session")
def hostile() -> dict[str, str]:
    """Names that would inject markup, scripts or LaTeX commands if not escaped."""
    return {"method": HOSTILE_METHOD, "model": HOSTILE_MODEL, "latex": LATEX_HOSTILE}


def image_rows(values: dict[tuple, list[float]]) -> pd.DataFrame:
    """Per-image rows from {(method, model, alpha, labelled, fold): [iou per image]} (other columns filled)."""
    rows = []
    for (method, model, alpha, labelled, fold), ious in values.items():
        trial = f"{method}-{model}-{alpha}-{labelled}-{fold}"
        for i, iou in enumerate(ious):
            count = np.array([10, 10, 10, 10, 960])
            rows.append({"schema_version": 1, "study": "hand", "trial_id": trial, "method": method,
                         "model": model, "alpha": alpha, "labelled_slices": labelled, "unlabelled_slices": 100,
                         "fold": fold, "seed": 0, "dataset_fingerprint": "fp", "case_id": "c", "slice_index": i,
                         "patch": "full", "fg_pixels": 50, "iou": iou, "dice": 2 * iou / (1 + iou),
                         "mean_dice_2class": (1 + 2 * iou / (1 + iou)) / 2, "ece": 0.1 * (1 - iou),
                         **{f"bin{k}_count": int(count[k]) for k in range(5)},
                         **{f"bin{k}_conf_sum": float(count[k] * (0.55 + 0.1 * k)) for k in range(5)},
                         **{f"bin{k}_correct_sum": int(count[k] * (0.5 + 0.1 * k)) for k in range(5)}})
    return pd.DataFrame(rows)
