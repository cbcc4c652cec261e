"""Full-budget TPE against ASHA-TPE and Hyperband-TPE on the phantom (issue 24).

Run: python bench/bench_search.py [--quick] [--arms none asha hyperband] [--out DIR]

For each arm one ``mismatch search`` of the same study (Sup1 and MisMatch, the same space:
each method's declared settings and ``train.lr``, the same TPE seed, the same candidates,
one fold, a held-out tuning case that validates, the fold's test cases that test), differing
only in ``search.scheduler``. Per arm and method it prints the candidates (complete / pruned),
the trial-epochs and training seconds spent (pruned runs included: best.json's ledger), the
wall seconds of the arm, the best validation IoU found (Optuna's objective, full budget only)
and the TEST IoU of the chosen candidate (the mean over its runs' test images: the number a
table retrained at full budget starts from), then the saving of each pruned arm against
``none``: trial-epochs ratio and test-IoU difference in points. ``--quick``: 10 candidates of
18 epochs on 48 x 48 slices, width 8 (rungs at 1, 3 and 9), under 10 minutes on 2 CPU cores;
the default profile: 16 candidates of 27 epochs on the quickstart's 64 x 64 phantom.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from mismatch.study.store import read_table

PROFILES = {
    "quick": {"candidates": 10, "epochs": 18, "size": [48, 48], "slices": 12, "cases": 8, "width": 8, "labelled": 6},
    "full": {"candidates": 16, "epochs": 27, "size": [64, 64], "slices": 24, "cases": 10, "width": 16, "labelled": 10},
}


def study_file(arm: str, p: dict, folder: Path) -> Path:
    """The arm's study file: everything equal but the scheduler."""
    raw = {
        "name": f"bench-{arm}",
        "base": {"data": {"synthetic": {"kind": "vessels", "cases": p["cases"], "size": p["size"], "slices": p["slices"]}},
                 "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2, "tuning_cases": 1},
                 # the quickstart's protocol: two-stream, equal steps and labelled presentations
                 "train": {"epochs": p["epochs"], "snapshot_k": 1, "prediction_maps": 0, "stream": "two-stream"}},
        "methods": [{"name": "sup1", "width": p["width"]}, {"name": "mismatch", "model": "mm", "width": p["width"]}],
        "grid": {"labelled_slices": [p["labelled"]], "seed": [0]},
        "search": {"params": ["train.lr"], "candidates": p["candidates"], "folds": [0], "sampler_seed": 0,
                   "scheduler": arm, "grace_epochs": 1, "reduction_factor": 3},
        "resources": {"cpu": 1},
        "max_failures": 0,
    }
    path = folder / f"{arm}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_arm(arm: str, p: dict, folder: Path) -> list[dict]:
    """One search; its per-method figures."""
    storage = folder / "runs"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mismatch", "search", str(study_file(arm, p, folder)),
                           "--storage", str(storage)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"bench_search: the {arm} search failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    best = json.loads((storage / f"bench-{arm}" / "best.json").read_text())
    # the store's reader: trial files of completed and pruned runs have different columns
    trials = read_table(str(storage), f"bench-{arm}", "trials")
    images = read_table(str(storage), f"bench-{arm}", "images", columns=["trial_id", "iou"])
    out = []
    for method, found in best["methods"].items():
        lr = found["params"]["train.lr"]
        chosen = trials[(trials["method"] == method) & (trials["status"] == "completed")
                        & ((trials["spec_json"].map(lambda s: json.loads(s)["train"]["lr"]) - lr).abs() < 1e-15)]
        test = images[images["trial_id"].isin(chosen["trial_id"])]["iou"].mean()
        out.append({"arm": arm, "method": method, "complete": found["candidates"], "pruned": found["pruned_candidates"],
                    "trial_epochs": found["trial_epochs"], "train_s": found["train_time_s"], "wall_s": wall,
                    "best_val_iou": found["objective"], "test_iou": float(test), "lr": lr})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--arms", nargs="+", default=["none", "asha", "hyperband"])
    parser.add_argument("--out", type=Path, default=None, help="keep the searches here (default: a temporary folder)")
    args = parser.parse_args()
    p = PROFILES["quick" if args.quick else "full"]
    print(f"profile {'quick' if args.quick else 'full'}: {p}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for arm in args.arms:
            rows += run_arm(arm, p, folder)
            print(f"{arm}: {rows[-1]['wall_s']:.0f} s", flush=True)
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if "none" in args.arms:
        full = frame[frame["arm"] == "none"].set_index("method")
        for _, r in frame[frame["arm"] != "none"].iterrows():
            f = full.loc[r["method"]]
            print(f"{r['arm']} vs none, {r['method']}: {f['trial_epochs'] / r['trial_epochs']:.2f}x fewer trial-epochs, "
                  f"{f['train_s'] / r['train_s']:.2f}x less training time; best test IoU "
                  f"{100 * (r['test_iou'] - f['test_iou']):+.2f} points")


if __name__ == "__main__":
    main()
