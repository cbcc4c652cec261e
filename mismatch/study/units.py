"""Planning a study's units: which trials train alone and which as one fused group, the
groups' ids and Tune configs, and ``fuse: auto``'s group size from a member's measured memory.
"""

from __future__ import annotations

import hashlib
from typing import Any, TextIO

from mismatch.config import TrialSpec
from mismatch.fusion.support import plan_groups
from mismatch.study.study_file import Fuse
from mismatch.study.trials import trial_payload


def group_id(trial_ids: list[str]) -> str:
    """A fused group's id (its Tune trial, checkpoint folder and ``fuse_group``): a hash of its
    members' trial ids, so a re-run that plans the same group resumes its checkpoint."""
    digest = hashlib.sha256("\n".join(sorted(trial_ids)).encode()).hexdigest()[:12]
    return f"fused-{digest}"


def plan_units(todo: list[TrialSpec], fuse: int, started: dict[str, list[str]] | None = None,
               specs: list[TrialSpec] | None = None) -> list[list[TrialSpec]]:
    """The trials to run as Tune trials: groups of up to ``fuse`` fusable trials (in study
    order), every other trial alone (:func:`mismatch.fusion.plan_groups`).

    With fusion on, a group that an earlier run started (``started``: its checkpoint folder's
    member list) and that still has a member in ``todo`` is planned again as it was, with every
    member (``specs``: the study's trials), so it resumes from its checkpoint: a kill between
    two members' row writes costs no training. Its stored members train along, unstored."""
    by_id = {s.trial_id(): s for s in (specs or todo)}
    pending = {s.trial_id() for s in todo}
    units: list[list[TrialSpec]] = []
    taken: set[str] = set()
    for group, members in (started or {}).items() if fuse > 1 else ():
        ids = set(members)
        if ids & pending and not ids & taken and ids <= set(by_id) and group == group_id(members):
            units.append([by_id[m] for m in members])
            taken |= ids
    rest = [s for s in todo if s.trial_id() not in taken]
    return units + [[rest[i] for i in group] for group in plan_groups(rest, fuse)]


def unit_config(unit: list[TrialSpec], kernels: str = "auto") -> dict[str, Any]:
    """The Tune config's ``trial`` of one unit: a trial (``id``, ``spec``) or a fused group
    (``id``: :func:`group_id`, ``members``: the trials' ``id`` and ``spec``, ``kernels``: how
    it steps)."""
    trials = [{"id": s.trial_id(), "spec": trial_payload(s)} for s in unit]
    if len(unit) == 1:
        return trials[0]
    return {"id": group_id([t["id"] for t in trials]), "members": trials, "kernels": kernels}


def fuse_size(fuse: Fuse, todo: list[TrialSpec], study: str, stream: TextIO, gpu: float = 0) -> int:
    """The group size K of ``fuse``: the number itself, or for ``auto`` the size that fits a
    trial's ``gpu`` share (:func:`auto_fuse`), printed once."""
    if fuse != "auto":
        return int(fuse)
    from mismatch.fusion.support import trial_fusable

    fusable = [s for s in todo if trial_fusable(s) is None]
    size, why = auto_fuse(fusable[0], gpu) if fusable else (1, "no trial to run can be fused")
    print(f"[{study}] fuse auto: K = {size} ({why})", file=stream, flush=True)
    return size


#: ``fuse: auto`` where trials get no CUDA device (a CPU gains little from fusion;
#: docs/studies.md has the measurements), and the most members ``auto`` ever picks.
AUTO_FUSE_CPU, AUTO_FUSE_MAX = 4, 64


#: The share of the device's free memory that ``auto`` fills (the rest: allocator slack, cuDNN workspaces).
AUTO_FUSE_SHARE = 0.8


def auto_fuse(spec: TrialSpec, gpu: float) -> tuple[int, str]:
    """K for ``fuse: auto`` and why, for trials that each hold ``gpu`` GPUs (Ray's resource;
    0.25: four groups share one device): measured where the trials run, on a Ray worker holding
    that share (:func:`measure_on_worker`; the driver may sit on a head node without a GPU),
    K = free memory x min(gpu, 1) x :data:`AUTO_FUSE_SHARE` over one member's peak, at most
    :data:`AUTO_FUSE_MAX`. Trials without a GPU, or a worker that sees no CUDA device, take
    :data:`AUTO_FUSE_CPU`."""
    if spec.train.device == "cpu" or gpu <= 0:
        return AUTO_FUSE_CPU, "trials get no GPU: the CPU default"
    measured = measure_on_worker(spec, gpu)
    if measured is None:
        return AUTO_FUSE_CPU, "no CUDA device on a worker holding the trials' GPU share: the CPU default"
    member, free = measured
    share = min(gpu, 1.0)
    size = max(1, min(AUTO_FUSE_MAX, int(free * share * AUTO_FUSE_SHARE // max(member, 1))))
    return size, (f"{member / 2**20:.0f} MiB per member, {free / 2**20:.0f} MiB free on the GPU, "
                  f"{share:g} of it per group")


def measure_on_worker(spec: TrialSpec, gpu: float) -> tuple[int, int] | None:
    """:func:`measure_member` run as a Ray task holding ``gpu`` GPUs, as a trial does; its
    worker exits afterwards (``max_calls=1``), so its CUDA context leaves no memory behind."""
    import ray

    task = ray.remote(num_cpus=0, num_gpus=gpu, max_retries=0, max_calls=1)(measure_member)
    return ray.get(task.remote(spec))


def measure_member(spec: TrialSpec) -> tuple[int, int] | None:
    """``(peak bytes of one member, free bytes)`` on this process's CUDA device, or None if it
    sees none."""
    import torch

    if not torch.cuda.is_available():
        return None
    from mismatch.trial.fused import member_peak_bytes

    member = member_peak_bytes(spec)
    return member, torch.cuda.mem_get_info()[0]
