"""3D trials end to end: patch batches under both stream protocols (seeded, so a resumed trial
sees the same patches) and one tiny 3D trial through `mismatch train` (the real ``unet3d`` at
width 4, Sup1's ``unet`` mapped to it by the 2D -> 3D name rule)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mismatch.config import TrainSpec, load_trial_spec
from mismatch.data import load_trial_data
from mismatch.data.volumes3d import VolumeWindow
from mismatch.trial.batches import epoch_batches, steps_per_epoch
from tests.volumes3d_helpers import SPACING, write_volume_dataset

PATCH = [16, 32, 16]  # four poolings leave 1 x 2 x 1 voxels (16^3 would leave one)


@pytest.fixture(scope="module")
def vol_root(tmp_path_factory):
    return write_volume_dataset(tmp_path_factory.mktemp("vol3d") / "vol3d", cases=6, shape=(16, 24, 20))


def _spec_dict(root, **train) -> dict:
    return {
        "study": "tiny3d",
        "data": {"root": str(root), "spatial_dims": 3, "patch_size": PATCH, "patch_foreground": 0.5,
                 "sw_overlap": 0.25, "sw_mode": "gaussian"},
        "protocol": {"labelled_cases": 2, "unlabelled_cases": 2, "validation_cases": 1, "test_cases": 1},
        "method": {"name": "sup1", "width": 4},
        "train": {"epochs": 2, "snapshot_k": 2, "batch_size": 2, "device": "cpu", "prediction_maps": 2, **train},
    }


# ----------------------------------------------------------------------------- patch batches


def test_paper_stream_is_one_patch_per_labelled_and_unlabelled_volume(vol_root):
    spec = load_trial_spec(_spec_dict(vol_root, batch_size=3))
    data = load_trial_data(spec.data, spec.protocol)
    batches = list(epoch_batches(data, 0, spec.train, use_unlabelled=True))
    assert [b.image.shape for b in batches] == [(3, 1, 16, 32, 16), (1, 1, 16, 32, 16)]  # 4 volumes, batch 3
    assert sum(b.n_labelled for b in batches) == 2 and sum(b.n_unlabelled for b in batches) == 2
    assert all(b.label.shape == (len(b.image), 1, 16, 32, 16) and not b.label[b.unl].any() for b in batches)
    assert len(batches) == steps_per_epoch(data, spec.train, True)
    assert len(list(epoch_batches(data, 0, spec.train, use_unlabelled=False))) == 1  # sup: labelled volumes only


def test_two_stream_is_one_pass_over_the_unlabelled_volumes_with_labelled_patches_each_step(vol_root):
    spec = load_trial_spec(_spec_dict(vol_root, batch_size=1, stream="two-stream"))
    data = load_trial_data(spec.data, spec.protocol)
    batches = list(epoch_batches(data, 0, spec.train, use_unlabelled=True))
    assert len(batches) == math.ceil(2 / 1) == steps_per_epoch(data, spec.train, True)
    assert [(b.n_labelled, b.n_unlabelled) for b in batches] == [(1, 1), (1, 1)]


def test_patches_depend_only_on_seed_and_epoch(vol_root):
    spec = load_trial_spec(_spec_dict(vol_root))
    data = load_trial_data(spec.data, spec.protocol)

    def images(epoch: int, seed: int = 0) -> torch.Tensor:
        train = spec.train.model_copy(update={"seed": seed})
        return torch.cat([b.image for b in epoch_batches(data, epoch, train, True)])

    assert torch.equal(images(1), images(1))  # a trial resumed at epoch 1 sees the same patches
    assert not torch.equal(images(0), images(1)) and not torch.equal(images(1), images(1, seed=1))


def test_labelled_patches_are_centred_on_foreground_at_the_configured_rate(vol_root):
    spec = load_trial_spec(_spec_dict(vol_root, batch_size=2))
    data = load_trial_data(spec.data, spec.protocol)
    data.window = VolumeWindow(data.window.size, foreground=1.0)
    train = TrainSpec(batch_size=2, device="cpu")
    for epoch in range(5):
        for batch in epoch_batches(data, epoch, train, use_unlabelled=False):
            assert (batch.label.flatten(1).sum(1) > 0).all()  # foreground_prob 1: every labelled patch holds some


# ----------------------------------------------------------------------------- end to end


def test_a_resumed_3d_trial_gives_the_rows_of_an_uninterrupted_one(tmp_path, vol_root,
                                                                      interrupt_after_first_epoch):
    from mismatch.trial.run import run_trial

    spec = load_trial_spec(_spec_dict(vol_root, prediction_maps=0))
    whole = run_trial(spec)
    interrupt_after_first_epoch(spec, tmp_path)
    resumed = run_trial(spec, checkpoint_dir=tmp_path)
    assert resumed.trial["resumed_from_epoch"] == 1
    pd.testing.assert_frame_equal(resumed.cases, whole.cases)
    pd.testing.assert_frame_equal(resumed.images, whole.images)


def test_tiny_3d_trial_through_mismatch_train(tmp_path, vol_root, capsys):
    from mismatch.cli import main
    from mismatch.study.store import read_table

    spec_file = tmp_path / "trial3d.yaml"
    spec_file.write_text(yaml.safe_dump(_spec_dict(vol_root)))
    out = tmp_path / "runs"
    assert main(["train", str(spec_file), "--out", str(out)]) == 0, capsys.readouterr().err
    trial_id = load_trial_spec(_spec_dict(vol_root)).trial_id()
    assert trial_id in capsys.readouterr().out

    trials = read_table(str(out), "tiny3d", "trials")
    row = trials.iloc[0]
    assert row["status"] == "completed" and row["trial_id"] == trial_id
    assert row["optimizer_steps"] == 2 * 1 and row["labelled_presentations"] == 2 * 2  # sup1: 2 labelled volumes, batch 2
    assert row["unlabelled_slices"] == 0  # sup1 uses no unlabelled volume
    epochs = read_table(str(out), "tiny3d", "epochs")
    assert epochs["epoch"].tolist() == [0, 1] and epochs["val_dice"].between(0, 1).all()

    cases = read_table(str(out), "tiny3d", "cases")  # the primary 3D results: whole test volumes
    test_cases = yaml.safe_load(row["splits_json"])["test"]
    assert cases["case_id"].tolist() == test_cases and cases["dice"].between(0, 1).all()
    assert cases[["spacing_z_mm", "spacing_y_mm", "spacing_x_mm"]].values.tolist() == [list(SPACING)]
    assert cases["n_slices"].tolist() == [16] and cases["missing_slices"].tolist() == [0]
    assert np.isfinite(cases[["hd95_mm", "assd_mm"]].to_numpy()).all()

    images = pd.read_parquet(out / "tiny3d" / "images")  # a row per foreground slice of the test volume
    assert len(images) == row["n_test_images"] > 0 and (images["patch"] == "volume").all()
    assert set(images["case_id"]) == set(test_cases) and images["slice_index"].between(0, 15).all()
    assert (images["fg_pixels"] > 0).all()
    assert (out / "tiny3d" / "predictions" / f"{trial_id}.npz").exists()


def test_tiny_3d_multiclass_trial_through_mismatch_train(tmp_path, capsys):
    """The organs3d phantom (three nested classes) as a 4-class 3D MisMatch trial: case rows hold
    the means over the foreground classes of the classes table's case rows."""
    from mismatch.cli import main
    from mismatch.study.store import read_table

    data = tmp_path / "organs3d"
    assert main(["data", "synth", "organs3d", str(data), "--cases", "5", "--size", "32", "32", "--slices", "16"]) == 0
    spec = {"study": "organs", "data": {"root": str(data), "classes": [1, 2, 3], "spatial_dims": 3, "patch_size": PATCH},
            "protocol": {"labelled_cases": 2, "unlabelled_cases": 1, "validation_cases": 1, "test_cases": 1},
            "method": {"name": "mismatch", "model": "mm3d", "width": 4},
            "train": {"epochs": 1, "batch_size": 1, "device": "cpu", "prediction_maps": 1}}
    spec_file = tmp_path / "organs.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out = tmp_path / "runs"
    assert main(["train", str(spec_file), "--out", str(out)]) == 0, capsys.readouterr().err

    trial = read_table(str(out), "organs", "trials").iloc[0]
    assert trial["status"] == "completed" and trial["model"] == "mm3d"
    classes = read_table(str(out), "organs", "classes")
    case_classes = classes[classes["level"] == "case"]
    assert case_classes["class_index"].tolist() == [1, 2, 3]
    assert case_classes["class_name"].tolist() == ["cortex", "medulla", "pelvis"]
    cases = read_table(str(out), "organs", "cases")
    assert len(cases) == 1 and cases["dice"].iloc[0] == pytest.approx(case_classes["dice"].mean())
    images = read_table(str(out), "organs", "images")
    image_classes = classes[classes["level"] == "image"]
    assert len(image_classes) == 3 * len(images) > 0
    decoders = read_table(str(out), "organs", "decoders")
    assert len(decoders) == 2 and decoders["ece"].between(0, 1).all()
