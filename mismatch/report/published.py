"""The paper's published CARVE numbers, shown beside a study's own when it reports the same metric.

The paper's tables report what the authors' code called "IoU": the per-slice two-class mean
Dice (``mean_dice_2class`` here), mean over 10 folds, in percent. Source:
shared/reference/official-implementation.md ("Published reference numbers").
"""

from __future__ import annotations

import pandas as pd

from mismatch.report.table import Cell, Table, fmt_small

METHODS = ("sup1", "sup2", "mta", "mean-teacher", "fixmatch", "cct", "morph", "mismatch")
TABLE_I = {  # labelled slices -> means in METHODS order
    5: (48.32, 50.75, 54.91, 56.56, 49.30, 52.54, 52.93, 60.25),
    10: (53.38, 55.55, 57.78, 57.99, 51.53, 55.25, 57.08, 60.04),
    30: (52.09, 53.98, 60.78, 60.46, 55.16, 60.81, 60.19, 63.59),
    50: (60.69, 64.79, 68.11, 67.21, 62.91, 65.06, 64.88, 69.39),
    100: (68.74, 73.1, 72.48, 71.48, 72.58, 72.07, 72.11, 74.83),
}
TABLE_III = {"sup1": 9.13e-5, "sup2": 1.55e-2, "mta": 4.5e-3, "mean-teacher": 4.3e-4, "fixmatch": 1.05e-2,
             "cct": 1.8e-3, "morph": 2.2e-3}
TABLE_IV = {0.0: 50.75, 0.0005: 59.16, 0.001: 59.45, 0.002: 60.25, 0.004: 58.89}


def published_table() -> Table:
    """Table I of the paper (CARVE, mean over 10 folds), best of each row in bold."""
    rows, data = [], []
    for count, values in TABLE_I.items():
        best = max(values)
        rows.append([Cell(str(count))] + [Cell(f"{v:.2f}", bold=(v == best)) for v in values])
        data += [{"labelled_slices": count, "method": m, "mean": v} for m, v in zip(METHODS, values, strict=True)]
    pvalues = ", ".join(f"{m} {fmt_small(p, 3)}" for m, p in TABLE_III.items())
    alphas = ", ".join(f"{a:g}: {v:.2f}" for a, v in TABLE_IV.items())
    notes = ["Published CARVE numbers: the authors' \"IoU\", i.e. the two-class mean Dice, mean over 10 folds. "
             "Comparable with this study only when it ran on CARVE with the paper's protocol (see the "
             "dataset fingerprint under Provenance).",
             f"Published Table III (one-sided asymptotic Mann-Whitney U, 100 labelled slices): {pvalues}.",
             f"Published Table IV (alpha at 5 labelled slices): {alphas}."]
    return Table("published_table1", "Published Table I (CARVE) for comparison", ["labelled slices", *METHODS],
                 rows, pd.DataFrame(data), notes)
