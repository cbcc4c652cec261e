"""Process-level helpers for a trial: device choice, seeding, provenance, memory."""

from __future__ import annotations

import functools
import os
import random
import resource
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import torch


def select_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    """Seed Python, NumPy and torch; on the CPU, insist on deterministic kernels.

    On CUDA some kernels (bilinear upsampling backward) have no deterministic version, so
    there determinism is requested with ``warn_only`` and runs may differ in the last bits.
    Both switches are set either way: a study's worker process runs one trial after another
    (Ray Tune reuses its actors), and one trial's choice must not carry over to the next.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=deterministic and device.type == "cuda")
    torch.backends.cudnn.benchmark = False


#: Linux's per-process memory counters; writing "5" to clear_refs resets the peak (VmHWM).
PROC_STATUS, PROC_CLEAR_REFS = "/proc/self/status", "/proc/self/clear_refs"


def reset_peak_memory(device: torch.device) -> None:
    """Start a trial's peak-memory count: the CUDA allocator's peak, or on Linux the process's
    resident high-water mark (a worker process runs several trials one after another)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open(PROC_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:  # not Linux, or not allowed: the process's peak since it started is reported
        pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device`` since :func:`reset_peak_memory`, or the
    process's peak resident memory (since the reset on Linux; since the start elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open(PROC_STATUS) as f:
            hwm = next((line for line in f if line.startswith("VmHWM:")), None)
        if hwm is not None:
            return int(hwm.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is KiB on Linux


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit of the source tree, when it is a git checkout."""
    try:
        version = metadata.version("mismatch")
    except metadata.PackageNotFoundError:  # imported from a source tree that was not installed
        from mismatch import __version__ as version
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}{'.dirty' if dirty else ''}"


def set_threads(n: int | None) -> None:
    """Limit torch's intra-op threads (a Ray trial gets the CPUs it asked for)."""
    if n:
        torch.set_num_threads(n)
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
