"""A C > 2 trial's evaluation end to end with a fake method that returns softmax class
probabilities: per-class rows per image and per case, main rows the mean over foreground
classes, the classes table through the store; a binary trial writes no classes table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mismatch.config import load_trial_spec
from mismatch.data import load_trial_data
from mismatch.data.synth import write_synthetic_dataset
from mismatch.methods import Method
from mismatch.results import class_metrics, image_metrics, table_columns
from mismatch.study.store import read_table, write_result
from mismatch.trial.evaluate import evaluate_trial, validate
from mismatch.trial.state import TrainState, utc_now


class FixedSoftmax(Method):
    """Class logits k * w * x of the first image channel: deterministic, C channels (C > 2) or
    a sigmoid foreground probability (C = 2), as the method contract says."""

    def __init__(self, config, in_channels: int, num_classes: int) -> None:
        super().__init__(config, in_channels)
        self.num_classes = num_classes
        self.w = nn.Parameter(torch.tensor(1.5))

    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        x = image[:, :1]
        if self.num_classes == 2:
            return torch.sigmoid(self.w * x)
        logits = torch.cat([k * self.w * x - k for k in range(self.num_classes)], dim=1)
        return torch.softmax(logits, dim=1)


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("acdc") / "acdc", "acdc-h5", 3, size=(24, 20), slices=5)


def _spec(root, **data):
    return load_trial_spec({
        "study": "mc", "data": {"root": str(root), "layout": "acdc-h5", **data},
        "protocol": {"fold": 0, "labelled_cases": 1, "unlabelled_cases": 1, "validation_cases": 1, "test_cases": 2,
                     "labelled_slices": 2},
        "method": {"name": "sup1"},
        "train": {"epochs": 1, "snapshot_k": 1, "device": "cpu", "prediction_maps": 2},
    })


def _evaluate(spec):
    data = load_trial_data(spec.data, spec.protocol)
    method = FixedSoftmax(spec.method, data.in_channels, data.num_classes)
    val = validate(method, data, torch.device("cpu"))
    state = TrainState(epoch=1, history=[{"epoch": 1, "time_s": 0.1, "loss_loss": 0.5, **val}],
                       snapshots=[method.state_dict()])
    return data, method, evaluate_trial(spec, method, data, state, torch.device("cpu"), utc_now())


def _probabilities(method, images):
    with torch.no_grad():
        return method.predict_proba(torch.from_numpy(images)).numpy()


def test_a_four_class_trial_has_per_class_rows_and_foreground_means(acdc_root, tmp_path):
    data, method, result = _evaluate(_spec(acdc_root, classes=[1, 2, 3]))
    assert (data.num_classes, data.class_names) == (4, ("RV", "Myo", "LV"))
    classes = result.classes
    assert classes is not None and list(classes.columns) == list(table_columns("classes"))
    images = classes[classes["level"] == "image"]
    assert len(images) == 3 * len(data.test) and set(images["class_name"]) == {"RV", "Myo", "LV"}
    prob = _probabilities(method, data.test.images)  # (N, 4, H, W)
    for i in (0, len(data.test) - 1):
        expected = class_metrics(prob[i], data.test.labels[i])
        got = images.iloc[3 * i: 3 * i + 3]
        assert got["dice"].tolist() == pytest.approx([c["dice"] for c in expected])
        assert got["tp"].tolist() == [c["tp"] for c in expected]
        assert result.images.iloc[i]["ece"] == pytest.approx(image_metrics(prob[i], data.test.labels[i])["ece"])
    # the images table's overlap metrics are the mean over the three foreground classes
    keys = ["case_id", "slice_index", "patch"]
    means = images.groupby(keys, observed=True)[["dice", "iou", "mean_dice_2class"]].mean().reset_index()
    merged = result.images.merge(means, on=keys, suffixes=("", "_classes"))
    assert len(merged) == len(result.images)
    for m in ("dice", "iou", "mean_dice_2class"):
        np.testing.assert_allclose(merged[m], merged[f"{m}_classes"])
    # case rows: one per test case and class, the cases table holding their means
    cases = classes[classes["level"] == "case"]
    assert len(cases) == 3 * len(result.cases) and cases["slice_index"].eq(-1).all()
    by_case = cases.groupby("case_id", observed=True)["dice"].mean()
    assert result.cases.set_index("case_id")["dice"].to_dict() == pytest.approx(by_case.to_dict())
    assert cases["hd95_mm"].notna().any() and cases["dice"].between(0, 1).all()
    # the epoch's validation values are foreground means too, and predictions hold foreground probability
    assert result.predictions["prob"].dtype == np.uint8 and result.predictions["label"].max() <= 3
    # the store writes and reads the classes table
    write_result(str(tmp_path), result)
    back = read_table(str(tmp_path), "mc", "classes")
    pd.testing.assert_frame_equal(back, classes, check_dtype=False, check_categorical=False)


def test_a_binary_trial_gives_todays_rows_and_no_classes_table(acdc_root, tmp_path):
    data, method, result = _evaluate(_spec(acdc_root, foreground_labels=[3]))
    assert (data.num_classes, data.class_names) == (2, ("foreground",))
    assert set(np.unique(data.test.labels)) <= {0, 1} and result.classes is None
    prob = _probabilities(method, data.test.images)[:, 0]
    expected = pd.DataFrame([image_metrics(prob[i], data.test.labels[i]) for i in range(len(prob))])
    pd.testing.assert_frame_equal(result.images[list(expected.columns)].reset_index(drop=True), expected,
                                  check_dtype=False)
    write_result(str(tmp_path), result)
    assert not (tmp_path / "mc" / "classes").exists()
    assert read_table(str(tmp_path), "mc", "classes").empty



def test_the_store_checks_classes_files_like_every_table(tmp_path):
    from mismatch.study.store import corrupt_files, write_trial

    frame = pd.DataFrame({"trial_id": ["t1"], "level": ["image"], "dice": [0.5]})
    write_trial(str(tmp_path), "s", "t1", {"trial_id": "t1", "status": "completed"}, classes=frame)
    assert read_table(str(tmp_path), "s", "classes")["dice"].tolist() == [0.5]
    (tmp_path / "s" / "classes" / "t1.parquet").write_bytes(b"not parquet")
    assert [(c.table, c.trial_id) for c in corrupt_files(str(tmp_path), "s")] == [("classes", "t1")]
