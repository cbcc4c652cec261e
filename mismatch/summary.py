"""A short human-readable summary of a finished trial."""

from __future__ import annotations

from typing import Any


def _mean_std(values: Any) -> str:
    return f"{values.mean():.4f} +- {values.std(ddof=0):.4f}" if len(values) else "n/a"


def format_summary(result: Any, folder: str) -> str:
    """Trial identity, cost and test metrics (mean +- std over test images) as text."""
    t, images = result.trial, result.images
    lines = [
        f"trial      {t['trial_id']}  ({t['method']} / {t['model']}, fold {t['fold']}, seed {t['seed']})",
        f"data       {t['labelled_slices']} labelled + {t['unlabelled_slices']} unlabelled slices, "
        f"fingerprint {t['dataset_fingerprint'][:12]}",
        f"network    {t['params']:,} parameters, {t['device']}",
        f"training   {t['epochs']} epochs in {t['train_time_s']:.1f} s, final loss {t['final_loss']:.4g}, "
        f"best val IoU {t['best_val_iou']:.4f}",
        f"inference  {t['infer_time_per_image_s'] * 1000:.2f} ms / image, peak memory {t['peak_memory_mb']:.0f} MB",
        f"test       {t['n_test_images']} images",
    ]
    for column, label in (("iou", "IoU (fg)"), ("dice", "Dice (fg)"), ("mean_dice_2class", "mean Dice (2-class)"),
                          ("ece", "ECE"), ("brier", "Brier")):
        lines.append(f"  {label:20s} {_mean_std(images[column]) if column in images else 'n/a'}")
    lines.append(f"rows       {folder}/{{trials,images,epochs}}/{t['trial_id']}.parquet")
    return "\n".join(lines)
