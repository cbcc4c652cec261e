"""Per-decoder calibration from the trial to the report: rows written by real trials, summed exactly."""

import numpy as np
import pandas as pd
import pytest

from mismatch.config import load_trial_spec
from mismatch.report import build_report
from mismatch.results import ece_from_bins
from mismatch.study.store import read_table, write_result
from mismatch.trial.run import run_trial


def test_report_sums_each_decoders_bins_over_folds(tmp_path, tiny_dict):
    for fold in (0, 1):
        spec = load_trial_spec(tiny_dict(protocol={"fold": fold}, train={"epochs": 1, "snapshot_k": 1}))
        write_result(str(tmp_path), run_trial(spec))
    index = build_report(tmp_path / "tiny", tmp_path / "report")
    table = pd.read_csv(index.parent / "tables" / "fig8_decoders.csv")
    rows = read_table(str(tmp_path), "tiny", "decoders")
    assert table["column"].str.endswith(("/ pasb", "/ nasb")).all() and len(table) == 2
    for name in ("pasb", "nasb"):
        mine = rows[rows["decoder_name"] == name]
        sums = [mine[[f"bin{k}_{part}" for k in range(5)]].sum().to_numpy(float)
                for part in ("count", "conf_sum", "correct_sum")]
        got = table[table["column"].str.endswith(name)].iloc[0]
        assert got["ece_pooled"] == pytest.approx(ece_from_bins(*sums))
        assert got["mean_fg_prob"] == pytest.approx(np.mean(mine["mean_fg_prob"]))
        assert got["trials"] == 2
    assert "Reliability of each decoder" in index.read_text()
