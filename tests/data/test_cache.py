"""The prepared-slice cache: same samples as raw, no-op re-runs, fingerprints, atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from mismatch.cli import main
from mismatch.config import DataSpec, ProtocolSpec
from mismatch.data import (
    DataError,
    FingerprintMismatchError,
    OutputExistsError,
    load_trial_data,
    n_folds_of,
    open_prepared,
    prepare_dataset,
    write_synthetic_dataset,
)
from mismatch.data import cache as cache_module
from mismatch.data.presets import data_spec_for

PROTOCOL = ProtocolSpec(labelled_cases=1, unlabelled_cases=2, validation_cases=1, test_cases=1, labelled_slices=3)
ROLES = ("labelled", "unlabelled", "validation", "test")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("raw") / "vessels", "vessels", 5, (36, 42), 8, seed=0)


def _spec(raw, **fields) -> DataSpec:
    return data_spec_for("msd", raw, "msd", {"min_foreground": 5, **fields})


def _assert_same(a, b) -> None:
    assert a.splits == b.splits and a.fingerprint == b.fingerprint and a.in_channels == b.in_channels
    for role in ROLES:
        x, y = getattr(a, role), getattr(b, role)
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.slice_index, y.slice_index)
        assert x.images.dtype == y.images.dtype == np.float32 and x.case_ids == y.case_ids and x.patch == y.patch


@pytest.mark.parametrize("fields", [
    {},  # full slices, padded per trial to a multiple of 8 of its largest case
    {"crop": "corners", "crop_size": 16},
    {"crop": "random-corner", "crop_size": 16},
    {"crop": "centre", "crop_size": 24, "context_slices": 3},
], ids=["none", "corners", "random-corner", "centre-3"])
def test_prepared_cache_gives_the_same_trial_data_as_raw(raw, tmp_path, fields):
    spec = _spec(raw, **fields)
    result = prepare_dataset(spec, tmp_path / "p")
    assert not result.up_to_date and result.cases == 5
    prepared = DataSpec(**{k: v for k, v in result.study_data.items()})
    for protocol in (PROTOCOL, PROTOCOL.model_copy(update={"fold": 3, "unlabelled_slices": 4})):
        _assert_same(load_trial_data(spec, protocol), load_trial_data(prepared, protocol))
    assert prepared.fingerprint == load_trial_data(spec, PROTOCOL).data_fingerprint  # float32: the raw value


def test_index_and_manifest(raw, tmp_path):
    result = prepare_dataset(_spec(raw, crop="corners", crop_size=16), tmp_path / "p")
    index = pd.read_parquet(tmp_path / "p" / "index.parquet")
    assert list(index.columns) == ["case_id", "row", "slice_index", "patch", "fg_pixels", "slice_fg_pixels"]
    assert len(index) == result.samples and (index["slice_fg_pixels"] > 5).all()
    assert (index.groupby(["case_id", "slice_index"]).size() == 4).all()  # four corners per slice
    images = np.load(tmp_path / "p" / "cases" / "vessels_002" / "images.npy", mmap_mode="r")
    labels = np.load(tmp_path / "p" / "cases" / "vessels_002" / "labels.npy", mmap_mode="r")
    rows = index[index.case_id == "vessels_002"]
    assert images.shape == (len(rows), 1, 16, 16) and images.dtype == np.float32 and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels.reshape(len(rows), -1).sum(axis=1), rows["fg_pixels"])
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["fingerprint"] == result.fingerprint and manifest["recipe"]["crop"] == "corners"
    assert manifest["cases"] == [f"vessels_{i:03d}" for i in range(5)] and manifest["in_channels"] == 1
    assert n_folds_of(DataSpec(prepared=str(tmp_path / "p"), preset="msd"), PROTOCOL) == 5


def test_rerun_with_unchanged_inputs_does_nothing(raw, tmp_path):
    spec, out = _spec(raw), tmp_path / "p"
    first = prepare_dataset(spec, out)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    again = prepare_dataset(spec, out)
    assert again.up_to_date and again.fingerprint == first.fingerprint
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    label = raw / "labelsTr" / "vessels_001.nii.gz"
    os.utime(label)  # touched, same bytes: re-hashed, still up to date
    assert prepare_dataset(spec, out).up_to_date
    assert not prepare_dataset(spec, out, force=True).up_to_date


def test_changed_recipe_or_dtype_prepares_again(raw, tmp_path):
    out = tmp_path / "p"
    first = prepare_dataset(_spec(raw), out)
    other = prepare_dataset(_spec(raw, min_foreground=20), out)
    assert not other.up_to_date and other.fingerprint != first.fingerprint and other.samples < first.samples
    half = prepare_dataset(_spec(raw), out, dtype="float16")
    assert half.fingerprint not in (first.fingerprint, other.fingerprint)
    data = load_trial_data(DataSpec(**half.study_data), PROTOCOL)
    exact = load_trial_data(_spec(raw), PROTOCOL)
    assert data.test.images.dtype == np.float32
    np.testing.assert_allclose(data.test.images, exact.test.images, atol=5e-3)
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # old caches and temporaries are gone


def test_a_trial_refuses_another_fingerprint_or_recipe(raw, tmp_path):
    result = prepare_dataset(_spec(raw, crop="centre", crop_size=24), tmp_path / "p")
    good = DataSpec(**result.study_data)
    assert good.crop == "centre" and good.fingerprint == result.fingerprint
    with pytest.raises(FingerprintMismatchError, match=r"prepared cache .* but the spec pins 0000"):
        load_trial_data(good.model_copy(update={"fingerprint": "0000"}), PROTOCOL)
    with pytest.raises(DataError, match=r"another recipe .*preset 'msd'.*crop: cache \"centre\", spec \"none\""):
        load_trial_data(DataSpec(prepared=str(tmp_path / "p"), preset="msd", min_foreground=5), PROTOCOL)


def test_a_file_changed_on_disk_changes_the_fingerprint(tmp_path):
    raw = write_synthetic_dataset(tmp_path / "raw", "vessels", 5, (32, 32), 6, seed=1)
    first = prepare_dataset(_spec(raw), tmp_path / "p")
    (raw / "dataset.json").write_text((raw / "dataset.json").read_text().replace('"name"', '"name" ', 1))
    second = prepare_dataset(_spec(raw), tmp_path / "p")
    assert not second.up_to_date and second.fingerprint != first.fingerprint


def test_foreign_folders_are_refused_and_damaged_caches_detected(raw, tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="is not empty"):
        prepare_dataset(_spec(raw), out)
    prepare_dataset(_spec(raw), out, overwrite=True)
    assert not (out / "notes.txt").exists()
    (out / "cases" / "vessels_000" / "labels.npy").unlink()
    with pytest.raises(DataError, match="is damaged"):
        open_prepared(out)
    assert not prepare_dataset(_spec(raw), out).up_to_date  # repaired
    with pytest.raises(DataError, match="not a prepared cache"):
        open_prepared(tmp_path)


def test_a_crash_while_preparing_leaves_nothing(raw, tmp_path, monkeypatch):
    calls = []
    original = cache_module._CaseWriter.__call__

    def crash_on_third(self, case):
        calls.append(case.case_id)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        original(self, case)

    monkeypatch.setattr(cache_module._CaseWriter, "__call__", crash_on_third)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_dataset(_spec(raw), tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_prepare_cli_prints_a_study_snippet(raw, tmp_path, capsys):
    out = tmp_path / "p"
    args = ["data", "prepare", "msd", str(raw), str(out), "--min-foreground", "5", "--crop", "centre",
            "--crop-size", "24", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "prepared 5 cases" in printed
    snippet = yaml.safe_load(printed[printed.index("data:"):])["data"]
    assert snippet == {"prepared": str(out), "preset": "msd", "min_foreground": 5, "crop": "centre", "crop_size": 24,
                       "fingerprint": snippet["fingerprint"]}
    assert len(load_trial_data(DataSpec(**snippet), PROTOCOL).test) > 0
    assert main(args) == 0 and "is up to date" in capsys.readouterr().out


def test_cases_of_different_sizes_are_padded_per_trial(tmp_path):
    from mismatch.data.msd import write_case, write_dataset_json

    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(20, 30), (26, 18), (17, 17), (24, 24), (30, 21)]):
        label = (rng.random((4, h, w)) < 0.3).astype(np.uint8)
        write_case(tmp_path / "raw", f"c{i}", rng.normal(0, 50, (1, 4, h, w)), label, np.eye(4), np.int16)
    write_dataset_json(tmp_path / "raw", name="m", channel_names=["CT"], labels={"bg": 0, "fg": 1}, num_training=5)
    spec = data_spec_for("msd", tmp_path / "raw")
    result = prepare_dataset(spec, tmp_path / "p")
    for fold in range(5):
        protocol = PROTOCOL.model_copy(update={"fold": fold})
        raw_data, cached = load_trial_data(spec, protocol), load_trial_data(DataSpec(**result.study_data), protocol)
        _assert_same(raw_data, cached)
        assert raw_data.test.images.shape[2] % 8 == 0 and raw_data.test.images.shape[3] % 8 == 0
