"""Rows written by version-1 code (tests/fixtures/schema_v1, commit 104359b) against today's schema and report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mismatch import results
from mismatch.report import build_report
from mismatch.report.aggregate import per_trial
from mismatch.report.load import load_study
from mismatch.results import schema, versions

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "schema_v1"
COMPLETED_ID, FAILED_ID = "mismatch-1c5998f23ff3", "sup1-1687e3a00960"


def pa_bytes(frame: pd.DataFrame) -> pa.BufferReader:
    """``frame`` written as Parquet the way the store writes it, ready to read back."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return pa.BufferReader(sink.getvalue())


def _file(table: str, trial_id: str = COMPLETED_ID) -> pd.DataFrame:
    return pq.read_table(FIXTURE / table / f"{trial_id}.parquet").to_pandas()


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A writable copy of the fixture study folder."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "schema-v1"))


# Version 2 added label_draw (identity) and stream, budget, optimizer_steps, labelled_presentations (trials).
V2_ONLY = {"label_draw", *schema.TRIAL_PROTOCOL, *schema.TRIAL_BUDGET}


def _v1(columns: tuple[str, ...] | list[str]) -> list[str]:
    return [c for c in columns if c not in V2_ONLY]


def test_version_1_rows_have_the_schemas_columns_but_version_2s_in_order() -> None:
    assert list(_file("images").columns) == _v1(results.table_columns("images"))
    assert list(_file("decoders").columns) == _v1([*schema.IDENTITY, *schema.DECODER_COLUMNS, *schema.bin_columns()])
    epochs = _file("epochs")
    losses = [c for c in epochs.columns if c.startswith(schema.LOSS_PREFIX)]
    assert losses and list(epochs.columns) == _v1([*schema.IDENTITY, *schema.EPOCH_COLUMNS, *losses,
                                                   *schema.VAL_COLUMNS])
    completed = [*schema.IDENTITY, *schema.TRIAL_RESULT, *schema.TRIAL_RUN, *schema.TIMES, *schema.TRIAL_STORE]
    assert list(_file("trials").columns) == _v1(completed)
    failed = [*schema.IDENTITY, *schema.FAILED_TRIAL, *schema.TIMES]
    assert list(_file("trials", FAILED_ID).columns) == _v1(failed)
    assert set(completed) | set(failed) <= set(results.TRIAL_COLUMNS)


def test_the_v1_to_v2_upgrade_fills_the_new_columns() -> None:
    assert results.SCHEMA_VERSION == 2
    for table in ("images", "epochs", "decoders"):
        new = results.upgrade(_file(table), table)
        assert list(new.columns[: len(schema.IDENTITY)]) == list(schema.IDENTITY)  # label_draw after seed
        assert set(new["label_draw"]) == {0} and set(new["schema_version"]) == {2}
        assert len(new) == len(_file(table))
    raw = pd.concat([_file("trials"), _file("trials", FAILED_ID)], ignore_index=True)
    trials = results.upgrade(raw, "trials")
    assert trials["stream"].tolist() == ["streaming"] * 2 and trials["budget"].tolist() == ["paper"] * 2
    assert trials["optimizer_steps"].tolist() == [-1, -1] == trials["labelled_presentations"].tolist()
    assert trials["label_draw"].tolist() == [0, 0] and trials["trial_id"].tolist() == raw["trial_id"].tolist()
    assert trials["final_val_iou"].iloc[0] == raw["final_val_iou"].iloc[0]


def test_todays_failed_row_matches_the_upgraded_version_1_row() -> None:
    from mismatch.config import TrialSpec
    from mismatch.trial.evaluate import failed_trial_row

    old = results.upgrade(_file("trials", FAILED_ID), "trials")
    spec = TrialSpec.model_validate_json(old["spec_json"].iloc[0])
    assert spec.trial_id() == FAILED_ID  # ids of version-1 specs hold
    row = failed_trial_row(spec, RuntimeError("synthetic failure for the schema-v1 fixture"), old["started_at"].iloc[0])
    new = pq.read_table(pa_bytes(pd.DataFrame([row]))).to_pandas()  # through Parquet, as the store writes it
    assert list(new.columns) == [*schema.IDENTITY, *schema.FAILED_TRIAL, *schema.TIMES]
    assert TrialSpec.model_validate_json(new["spec_json"].iloc[0]) == spec  # the JSON gained keys at defaults
    moving = ["finished_at", "code_version", "torch_version", "spec_json"]
    new = new.drop(columns=moving)
    old = old.drop(columns=[*moving, *schema.TRIAL_BUDGET])[list(new.columns)]
    pd.testing.assert_frame_equal(new, old, check_exact=True, check_dtype=False)


def test_the_report_reads_version_1_rows_and_builds_its_tables(study: Path, tmp_path: Path) -> None:
    data = load_study(study)
    assert sorted(data.trials["trial_id"].astype(str)) == [COMPLETED_ID, FAILED_ID]
    trials = per_trial(data, "iou")
    assert trials.loc[COMPLETED_ID, "status"] == "completed" and trials.loc[FAILED_ID, "status"] == "failed"
    assert trials.loc[COMPLETED_ID, "n_images"] == 20
    assert trials.loc[COMPLETED_ID, "value"] == pytest.approx(_file("images")["iou"].mean())
    decoders = data.decoder_rows()
    assert decoders["decoder_name"].tolist() == ["pasb", "nasb"]
    index = build_report(study, tmp_path / "report")
    failed = pd.read_csv(index.parent / "tables" / "failed_trials.csv")
    assert FAILED_ID in failed.to_string()
    fig8 = pd.read_csv(index.parent / "tables" / "fig8_decoders.csv")
    for name in ("pasb", "nasb"):
        row = decoders[decoders["decoder_name"] == name]
        got = fig8[fig8["column"].str.endswith(name)].iloc[0]
        assert got["ece_pooled"] == pytest.approx(results.pooled_calibration(row)[3])


def test_a_later_version_upgrades_version_1_rows_on_read(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a (pretend) version 3 that renamed a column and tagged the study, the report still reads v1 rows."""
    for module in (results, schema, versions):
        monkeypatch.setattr(module, "SCHEMA_VERSION", 3)
    step = results.Upgrade(2, renamed={"final_val_iou": "last_val_iou"},
                           transform=lambda f, t: f.assign(study=f["study"].astype(str) + "@v2") if "study" in f else f)
    monkeypatch.setitem(versions.UPGRADES, 2, step)
    assert "final_val_iou" in results.read_columns(["last_val_iou"])
    data = load_study(study)
    assert set(data.trials["study"]) == {"schema-v1@v2"}
    assert set(data.trials["schema_version"]) == {3}
    raw = pd.concat([_file("trials"), _file("trials", FAILED_ID)], ignore_index=True)
    new = results.upgrade(raw, "trials")
    assert new["last_val_iou"].iloc[0] == raw["final_val_iou"].iloc[0] and "final_val_iou" not in new
    assert new["trial_id"].tolist() == raw["trial_id"].tolist()


def test_mixed_versions_keep_their_row_order(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (results, schema, versions):
        monkeypatch.setattr(module, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(versions.UPGRADES, 1, results.Upgrade(1, added={"images": {"extra": 7}}))
    frame = pd.DataFrame({"schema_version": [2, 1, 2, 1], "trial_id": list("abcd")}, index=[5, 5, 0, 1])
    out = results.upgrade(frame, "images")
    assert out["trial_id"].tolist() == list("abcd") and out.index.tolist() == [5, 5, 0, 1]
    assert out["extra"].tolist()[1::2] == [7, 7] and out["schema_version"].tolist() == [2, 2, 2, 2]


def test_rows_newer_than_the_code_are_refused(study: Path) -> None:
    path = study / "trials" / f"{FAILED_ID}.parquet"
    frame = pd.read_parquet(path)
    frame["schema_version"] = results.SCHEMA_VERSION + 1
    frame.to_parquet(path, index=False)
    with pytest.raises(ValueError, match="newer than this code's"):
        load_study(study)
