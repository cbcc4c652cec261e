"""End to end: `mismatch train` on a tiny phantom writes Parquet rows that read back."""

import subprocess
import sys

import pandas as pd
import yaml

from mismatch.config import load_trial_spec
from mismatch.study.store import read_table


def _mismatch(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mismatch", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_train_cli_writes_rows_that_read_back(tmp_path, tiny_dict):
    spec_file = tmp_path / "trial.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_dict()))
    out = tmp_path / "runs"
    proc = _mismatch("train", str(spec_file), "--out", str(out), "--set", "method.alpha=0.004", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    spec = load_trial_spec({**tiny_dict(), "method": {"name": "mismatch", "width": 4, "alpha": 0.004}})
    trial_id = spec.trial_id()
    assert trial_id in proc.stdout and "IoU (fg)" in proc.stdout

    trials = read_table(str(out), "tiny", "trials")
    images = pd.read_parquet(out / "tiny" / "images")
    epochs = read_table(str(out), "tiny", "epochs")
    assert trials["trial_id"].tolist() == [trial_id]
    row = trials.iloc[0]
    assert row["status"] == "completed" and row["alpha"] == 0.004 and row["model"] == "mm"
    assert load_trial_spec(yaml.safe_load(row["spec_json"])) == spec
    assert len(images) == row["n_test_images"] and (images["trial_id"] == trial_id).all()
    assert ((images["iou"] >= 0) & (images["iou"] <= images["dice"]) & (images["dice"] <= 1)).all()
    bins = images[[f"bin{k}_count" for k in range(5)]].sum(axis=1)
    assert (bins == images[["tp", "fp", "fn", "tn"]].sum(axis=1)).all()
    assert epochs["epoch"].tolist() == [0, 1]
    assert (out / "tiny" / "predictions" / f"{trial_id}.npz").exists()
    decoders = read_table(str(out), "tiny", "decoders")
    assert decoders["decoder_name"].tolist() == ["pasb", "nasb"] and (decoders["trial_id"] == trial_id).all()
    assert not list(out.rglob("*.tmp"))


def test_train_cli_typo_is_an_error_naming_the_key_and_file(tmp_path, tiny_dict):
    spec = tiny_dict()
    spec["train"]["epoch"] = 3
    spec_file = tmp_path / "typo.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    proc = _mismatch("train", str(spec_file), "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "train.epoch: unknown key" in proc.stderr and "typo.yaml" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_splits_file_holds_every_fold_without_leakage(tmp_path, tiny_result):
    from mismatch.data.splits import load_splits
    from mismatch.study.store import write_trial

    result = tiny_result
    trial_id = result.trial["trial_id"]
    folder = write_trial(str(tmp_path), "s", trial_id, result.trial, result.images, result.epochs,
                         splits=result.splits)
    row = read_table(str(tmp_path), "s", "trials").iloc[0]
    folds = load_splits(f"{folder}/{row['splits_file']}")
    assert sorted(folds) == list(range(6))  # 6 cases, 1 labelled case per fold
    import json
    assert folds[0] == json.loads(row["splits_json"])
    assert [folds[f]["labelled"] for f in range(6)] == [[c] for c in sorted(c for s in folds[0].values() for c in s)]


def test_train_cli_records_a_non_finite_loss_as_a_failed_trial(tmp_path, tiny_dict):
    spec = tiny_dict(train={"lr": 1.0e30, "epochs": 1, "snapshot_k": 1})  # Adam steps of 1e30 overflow at once
    spec_file = tmp_path / "nan.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    proc = _mismatch("train", str(spec_file), "--out", str(tmp_path / "runs"), "--quiet", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "is nan in steps" in proc.stderr or "is inf in steps" in proc.stderr
    row = read_table(str(tmp_path / "runs"), "tiny", "trials").iloc[0]
    assert row["status"] == "failed" and "NonFiniteLossError" in row["error"]


def test_dry_run_on_a_missing_data_root_says_to_synthesise_it_first(tmp_path, monkeypatch, capsys):
    from mismatch.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["train", "--data-root", "data/vessels", "--method", "mismatch", "--fold", "3", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err == ("error: no dataset at data/vessels; run `mismatch data synth vessels data/vessels` first "
                   "(or give --data-root an existing dataset)\n")


def test_dry_run_on_a_synthesised_data_root_prints_the_spec(tmp_path, monkeypatch, capsys):
    from mismatch.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "vessels").mkdir(parents=True)
    code = main(["train", "--data-root", "data/vessels", "--method", "mismatch", "--fold", "3", "--dry-run"])
    spec = yaml.safe_load(capsys.readouterr().out)
    assert code == 0 and spec["data"]["root"] == "data/vessels" and spec["protocol"]["fold"] == 3
