"""Evaluation of 3D trials: sliding-window prediction of whole volumes, and their rows.

A 3D trial (``DataSpec.spatial_dims: 3``) trains on patches; its validation and test volumes
are predicted whole with MONAI's ``sliding_window_inference``: windows of the patch size,
``sw_overlap`` between neighbours, blended by ``sw_mode`` (``gaussian`` or ``constant``), each
window the mean probability of the snapshot ensemble (and, for several-decoder networks, of
each decoder). A volume smaller than the window is padded by MONAI (constant 0, the mean of a
z-scored case) and its output cropped back, so every prediction is on the case's own grid.

What a 3D trial's tables hold (docs/data.md, "3D trials"):

- ``cases``: one row per test volume, measured on the whole predicted volume (Dice, IoU,
  HD95 and ASSD in mm at the case's spacing, NSD): the primary 3D results;
- ``images``: one row per slice (along D) of each predicted test volume whose label has more
  than ``min_foreground`` foreground voxels, as the 2D recipe selects test slices, keyed
  (case_id, slice_index, ``"volume"``): the report's image-level tables, calibration and
  prediction maps work unchanged, and are comparable with a 2D trial on the same data;
- ``decoders``: each decoder's calibration summed over every test voxel;
- ``epochs``: ``val_*`` are means over the validation volumes of whole-volume overlap metrics.


:func:`mismatch.trial.evaluate.evaluate_trial` and :func:`mismatch.trial.evaluate.validate` call into
this module when ``TrialData.spatial_dims`` is 3.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from mismatch import results
from mismatch.data.reassemble import CaseVolume
from mismatch.data.volumes3d import VolumeSet, VolumeWindow
from mismatch.methods import Method
from mismatch.results import rows
from mismatch.results.schema import VAL_PREFIX
from mismatch.trial.cases import case_metrics, geometry_values, multiclass_case_metrics, surface_metrics_lib
from mismatch.trial.state import NonFiniteVolumeError

#: Windows per forward pass of the sliding-window inference.
SW_BATCH = 4
#: The ``patch`` key of a 3D trial's image rows (a slice of a whole predicted volume).
VOLUME_PATCH = "volume"
#: Test volumes timed for ``infer_time_per_image_s`` (seconds per whole volume).
TIMED_VOLUMES = 3

Prediction = tuple[np.ndarray, list[np.ndarray] | None]


def _window_probabilities(methods: Sequence[Method], x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Snapshot-mean probability of a batch of windows, and each decoder's (several decoders)."""
    per_decoder = [m.decoder_probabilities(x) for m in methods]
    if any(p is None for p in per_decoder):
        return sum(m.predict_proba(x) for m in methods) / len(methods), []  # type: ignore[return-value]
    decoders = [sum(ps) / len(methods) for ps in zip(*per_decoder)]  # type: ignore[misc]
    return sum(decoders) / len(decoders), decoders  # type: ignore[return-value]


@torch.no_grad()
def predict_volume(methods: Sequence[Method], image: np.ndarray, window: VolumeWindow, device: torch.device,
                   decoders: bool = True) -> Prediction:
    """Ensemble probability of one volume ``image`` (C, D, H, W) by sliding-window inference.

    Returns the probability (D, H, W) (binary; (K, D, H, W) when the methods give K > 1
    channels) and, with ``decoders`` and a several-decoder network, each decoder's likewise
    (from the same forward passes: every window's outputs are stacked along the channels).
    """
    from monai.inferers import sliding_window_inference

    for m in methods:
        m.eval()
    channels: list[int] = []  # the mean's channels, then each decoder's: how to split the output

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        mean, per_decoder = _window_probabilities(methods, windows)
        parts = [mean, *per_decoder] if decoders else [mean]
        channels[:] = [p.shape[1] for p in parts]
        return torch.cat(parts, dim=1).float()

    x = torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32)).to(device)
    out = sliding_window_inference(x, roi_size=tuple(window.size), sw_batch_size=SW_BATCH, predictor=predictor,
                                   overlap=window.overlap, mode=window.mode)
    out = out[0].cpu().numpy()  # (channels, D, H, W)
    bounds = np.cumsum([0, *channels])
    parts = [_squeeze(out[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return parts[0], (parts[1:] or None)


def _squeeze(prob: np.ndarray) -> np.ndarray:
    """(1, D, H, W) -> (D, H, W): the binary convention of the metric functions."""
    return np.ascontiguousarray(prob[0] if prob.shape[0] == 1 else prob)


def predict_volumes(methods: Sequence[Method], volumes: VolumeSet, window: VolumeWindow, device: torch.device,
                    where: str = "test", decoders: bool = True) -> Iterator[Prediction]:
    """:func:`predict_volume` of each volume in order, one at a time (memory holds one);
    a non-finite probability raises :class:`NonFiniteVolumeError` naming the case."""
    for case_id, image in zip(volumes.case_ids, volumes.images):
        prob, per_decoder = predict_volume(methods, image, window, device, decoders)
        check_volume(prob, case_id, where)
        yield prob, per_decoder


def check_volume(prob: np.ndarray, case_id: str, where: str) -> None:
    """Raise :class:`NonFiniteVolumeError` if ``prob`` has a NaN or infinite voxel."""
    bad = int(np.count_nonzero(~np.isfinite(prob)))
    if bad:
        raise NonFiniteVolumeError(f"non-finite probability on {where} volume case_id={case_id!r} ({bad} voxels)")


def predict_test_volumes(methods: Sequence[Method], volumes: VolumeSet, window: VolumeWindow,
                         device: torch.device) -> tuple[list[np.ndarray], list[dict[str, Any]] | None]:
    """Every test volume's ensemble probability, and each decoder's calibration summed over
    every test voxel (None for a single-decoder network)."""
    probs: list[np.ndarray] = []
    totals: list[dict[str, Any]] | None = None
    for (prob, per_decoder), label in zip(predict_volumes(methods, volumes, window, device), volumes.labels):
        probs.append(prob)
        if per_decoder:
            batch = decoder_totals(per_decoder, label)
            totals = batch if totals is None else [results.add_bins(a, b) for a, b in zip(totals, batch)]
    return probs, totals


def validate_volumes(method: Method, volumes: VolumeSet, window: VolumeWindow, device: torch.device) -> dict[str, float]:
    """Mean over the validation volumes of the whole-volume overlap metrics (``val_*``)."""
    frame = pd.DataFrame([results.image_metrics(prob, label) for (prob, _), label in
                          zip(predict_volumes([method], volumes, window, device, "validation", False), volumes.labels)])
    return {VAL_PREFIX + k: float(frame[k].mean()) if len(frame) else float("nan") for k in results.OVERLAP_METRICS}


def qualifying_slices(label: np.ndarray, min_foreground: int) -> np.ndarray:
    """Slices (along D) of a label volume with more than ``min_foreground`` foreground voxels."""
    return np.flatnonzero(label.reshape(label.shape[0], -1).astype(bool).sum(axis=1) > min_foreground)


def _image_slices(volumes: VolumeSet, probs: Sequence[np.ndarray],
                  min_foreground: int) -> tuple[list[tuple[str, int, str]], list[np.ndarray], list[np.ndarray]]:
    """Keys, probabilities and labels of the qualifying slices (along D) of each test volume."""
    keys, prob, label = [], [], []
    for case_id, p, y in zip(volumes.case_ids, probs, volumes.labels):
        for d in qualifying_slices(y, min_foreground):
            keys.append((case_id, int(d), VOLUME_PATCH))
            prob.append(p[..., d, :, :])
            label.append(y[d])
    return keys, prob, label


def volume_image_rows(ident: dict[str, Any], volumes: VolumeSet, probs: Sequence[np.ndarray],
                      min_foreground: int) -> pd.DataFrame:
    """The images table of a 3D trial: one row per qualifying slice of each predicted volume."""
    return rows.image_rows(ident, *_image_slices(volumes, probs, min_foreground))


def _multiclass(prob: np.ndarray, label: np.ndarray) -> bool:
    """Whether ``prob`` holds class probabilities (C, D, H, W) of a C > 2 task."""
    return prob.ndim == label.ndim + 1


def volume_case_tables(ident: dict[str, Any], volumes: VolumeSet, probs: Sequence[np.ndarray], tolerance_mm: float,
                       class_names: Sequence[str] = ("foreground",)) -> tuple[pd.DataFrame | None, list[dict[str, Any]]]:
    """The cases table of a 3D trial, one row per whole test volume (None if none), and for a
    C > 2 task the case-level records of the classes table (each row then holds the means over
    the foreground classes, as a 2D trial's)."""
    lib = surface_metrics_lib()
    cases, records = [], []
    for case_id, p, y, spacing in zip(volumes.case_ids, probs, volumes.labels, volumes.spacing):
        volume = CaseVolume(case_id, truth=y, prob=p, slice_index=np.arange(y.shape[0]), spacing=spacing)
        if not _multiclass(p, y):
            cases.append(case_metrics(volume, tolerance_mm, lib))
            continue
        row, per_class = multiclass_case_metrics(case_id, results.class_prediction(p), y, p.shape[0], spacing,
                                                 tolerance_mm)
        cases.append({**row, **geometry_values(volume, lib)})
        records += [rows.class_record("case", rows.case_class_key(case_id), class_names, c) for c in per_class]
    return rows.case_rows(ident, cases), records


def volume_class_rows(ident: dict[str, Any], volumes: VolumeSet, probs: Sequence[np.ndarray], min_foreground: int,
                      class_names: Sequence[str], case_records: list[dict[str, Any]]) -> pd.DataFrame | None:
    """The classes table of a C > 2 3D trial: the image-level records of the slices of
    :func:`volume_image_rows`, then ``case_records``; None when binary."""
    if not probs or not _multiclass(probs[0], volumes.labels[0]):
        return None
    keys, prob, label = _image_slices(volumes, probs, min_foreground)
    return rows.class_rows(ident, rows.image_class_records(keys, prob, label, class_names) + case_records)


def decoder_totals(per_decoder: Sequence[np.ndarray], label: np.ndarray) -> list[dict[str, Any]]:
    """Each decoder's calibration sums over one volume: reliability bins (top-label bins for
    C > 2) and the probability of the true class on foreground voxels."""
    fg = label.astype(bool)
    out = []
    for p in per_decoder:
        if _multiclass(p, label):
            bins = results.top_label_bins(p, label)
            true_prob = np.take_along_axis(p, label.astype(np.int64)[None], axis=0)[0]
        else:
            bins, true_prob = results.reliability_bins(p, label), p
        out.append({**bins, "fg_prob_sum": float(true_prob[fg].sum()), "fg_pixels": int(fg.sum())})
    return out


def volume_prediction_maps(volumes: VolumeSet, probs: Sequence[np.ndarray], min_foreground: int,
                           n: int) -> dict[str, np.ndarray] | None:
    """``n`` qualifying test slices chosen by a hash of their key (as the 2D maps), padded at the
    bottom and right to one (H, W): the report's visual results."""
    keys = [(v, int(d)) for v, y in enumerate(volumes.labels) for d in qualifying_slices(y, min_foreground)]
    if n == 0 or not keys:
        return None
    names = [f"{volumes.case_ids[v]}|{d}|{VOLUME_PATCH}" for v, d in keys]
    chosen = sorted(sorted(range(len(keys)), key=lambda i: hashlib.sha1(names[i].encode()).hexdigest())[:n])
    height = max(volumes.labels[keys[i][0]].shape[1] for i in chosen)
    width = max(volumes.labels[keys[i][0]].shape[2] for i in chosen)

    def plane(array: np.ndarray, fill: float) -> np.ndarray:
        out = np.full((height, width), fill, dtype=array.dtype)
        out[: array.shape[0], : array.shape[1]] = array
        return out

    picks = [keys[i] for i in chosen]
    # C > 2: the probability of any foreground class (1 - background), as the 2D maps
    fg = [1.0 - p[0] if _multiclass(p, y) else p for p, y in zip(probs, volumes.labels)]
    return {
        "case_ids": np.array([volumes.case_ids[v] for v, _ in picks]),
        "slice_index": np.array([d for _, d in picks], dtype=np.int64),
        "patch": np.array([VOLUME_PATCH] * len(picks)),
        "image": np.stack([plane(volumes.images[v][0, d], float(volumes.images[v][0].min())) for v, d in picks])
        .astype(np.float16),
        "label": np.stack([plane(volumes.labels[v][d], 0) for v, d in picks]).astype(np.uint8),
        "prob": np.stack([plane(np.round(fg[v][d] * 255), 0) for v, d in picks]).astype(np.uint8),
    }


def time_volume_inference(method: Method, volumes: VolumeSet, window: VolumeWindow, device: torch.device) -> float:
    """Median seconds of the sliding-window prediction of one whole volume (one snapshot),
    over up to :data:`TIMED_VOLUMES` test volumes after a warm-up."""
    if not len(volumes):
        return float("nan")
    times = []
    for i in range(min(TIMED_VOLUMES, len(volumes)) + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        predict_volume([method], volumes.images[i % len(volumes)], window, device, decoders=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))
