"""Loading a trial spec or a study file imports neither torch nor Ray (checked in a fresh
interpreter), so a typo in a study file is reported in well under a second."""

import json
import subprocess
import sys

import yaml

SPEC = {"data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10}},
        "method": {"name": "mismatch", "model": "mm-a"}, "train": {"epochs": 1}}
STUDY = {
    "name": "light",
    "base": {"data": SPEC["data"], "train": SPEC["train"],
             "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2}},
    "methods": [{"name": "mismatch", "alpha": {"best_of": "my_search"}}, {"name": "sup1"}, {"name": "fixmatch"}],
    "grid": {"labelled_slices": [2], "fold": "all", "unlabelled_slices": [4]},
}

PROBE = """
import json, sys, time
from mismatch.config import SpecError, load_trial_spec_file
from mismatch.study.trials import load_study
t0 = time.perf_counter()
spec = load_trial_spec_file(sys.argv[1])
study = load_study(sys.argv[2], storage=sys.argv[3])
t1 = time.perf_counter()
try:
    load_study(sys.argv[4])
    typo = None
except SpecError as err:
    typo = str(err)
t2 = time.perf_counter()
print(json.dumps({"trials": len(study.trials()), "model": spec.method.model, "typo": typo,
                  "load_s": t1 - t0, "typo_s": t2 - t1,
                  "heavy": sorted(m for m in ("torch", "ray") if m in sys.modules)}))
"""


def test_loading_specs_and_studies_imports_neither_torch_nor_ray(tmp_path):
    spec_path, study_path, typo_path = tmp_path / "spec.yaml", tmp_path / "study.yaml", tmp_path / "typo.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    study_path.write_text(yaml.safe_dump(STUDY))
    typo_path.write_text(yaml.safe_dump({**STUDY, "methods": [{"name": "mismach"}]}))
    best = tmp_path / "store" / "my_search"
    best.mkdir(parents=True)
    (best / "best.json").write_text(json.dumps({"param": "alpha", "value": 0.003}))
    proc = subprocess.run([sys.executable, "-c", PROBE, str(spec_path), str(study_path), str(tmp_path / "store"),
                           str(typo_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["heavy"] == []
    assert out["model"] == "mm-a"
    # mismatch + fixmatch per fold (6 folds); sup1 ignores the unlabelled pool: still one per fold
    assert out["trials"] == 3 * 6
    assert "unknown method 'mismach' (did you mean 'mismatch'?)" in out["typo"]
    print(f"\nspec + study load {out['load_s']:.3f}s; study typo reported in {out['typo_s']:.3f}s (after imports)")


CLI_PROBE = """
import sys
from mismatch.cli import main
code = main(["study", "run", sys.argv[1]])
print(code, sorted(m for m in ("torch", "ray") if m in sys.modules))
"""


def test_study_run_reports_a_typo_before_importing_torch_or_ray(tmp_path):
    """The command a user runs, not only the loader: `mismatch study run` with a mistyped key."""
    typo = {**STUDY, "base": {**STUDY["base"], "train": {"epoch": 1}}}
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(typo))
    proc = subprocess.run([sys.executable, "-c", CLI_PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split("\n")[0] == "2 []", proc.stdout + proc.stderr
    assert "train.epoch: unknown key (did you mean 'epochs'?)" in proc.stderr
