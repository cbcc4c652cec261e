"""Fitting a study's per-trial resources to the cluster it runs on: GPUs dropped where there
are none, a trial that no node could ever hold refused before it starts, and the number of
trials that run at once.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from mismatch.study.trials import Study

#: How long a driver on a running cluster waits for a node that fits a trial (an autoscaler
#: may add one); ``--wait-resources`` overrides it.
WAIT_RESOURCES_S = 300.0


#: Ray's resource names of the study file's ``resources`` keys.
RAY_RESOURCE = {"cpu": "CPU", "gpu": "GPU"}


class ResourceError(RuntimeError):
    """A trial asks for more than any node of the cluster has: it could never start."""


def effective_resources(study: Study) -> dict[str, float]:
    """The study's per-trial resources, with GPUs dropped where the cluster has none."""
    import ray

    wanted = study.file.resources
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    if wanted.gpu and not has_gpu:
        print(f"[{study.name}] no GPU in the cluster: trials run on the CPU", file=sys.stderr)
    return {"cpu": wanted.cpu, "gpu": wanted.gpu if has_gpu else 0}


def node_shortfall(resources: dict[str, float], nodes: list[dict[str, Any]]) -> str | None:
    """Why no live node can hold one trial (a trial runs on one node), or None if one can.

    ``nodes`` is :func:`ray.nodes`' list; the message names the study file's key and the
    largest node's amount, e.g. ``resources.cpu: 64 requested per trial, but the largest
    node has 2 CPUs``.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    wanted = {key: amount for key, amount in resources.items() if amount > 0}
    if any(all(node.get(RAY_RESOURCE[k], 0) >= v for k, v in wanted.items()) for node in alive):
        return None
    for key, amount in wanted.items():
        largest = max((node.get(RAY_RESOURCE[key], 0) for node in alive), default=0)
        if largest < amount:
            return (f"resources.{key}: {amount:g} requested per trial, but the largest node has "
                    f"{largest:g} {RAY_RESOURCE[key]}s")
    have = "; ".join(", ".join(f"{node.get(RAY_RESOURCE[k], 0):g} {RAY_RESOURCE[k]}s" for k in wanted) for node in alive)
    asked = ", ".join(f"resources.{k}: {v:g}" for k, v in wanted.items())
    return f"{asked} requested per trial, but no single node has them all (nodes: {have})"


def check_resources(study: Study, resources: dict[str, float], address: str | None,
                    wait_s: float = WAIT_RESOURCES_S, poll_s: float = 5.0) -> None:
    """Refuse, before any trial starts, resources that no node of the cluster can provide.

    On the embedded local Ray (no ``address``) the refusal is immediate. On a running cluster
    an autoscaler (invisible from the driver) may still add a node: warn, poll for ``wait_s``
    seconds, then raise :class:`ResourceError`.
    """
    import ray

    shortfall = node_shortfall(resources, ray.nodes())
    if shortfall is None:
        return
    if not address:
        refuse_here(shortfall)
    print(f"[{study.name}] warning: {shortfall}; waiting up to {wait_s:g} s for a node that fits "
          "(an autoscaler may add one; --wait-resources SECONDS)", file=sys.stderr, flush=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        shortfall = node_shortfall(resources, ray.nodes())
        if shortfall is None:
            return
    raise ResourceError(f"{shortfall} (after waiting {wait_s:g} s for the cluster at {address}; lower "
                        "'resources' in the study file, add a larger node, or raise --wait-resources)")


def refuse_here(shortfall: str | None) -> None:
    if shortfall:
        raise ResourceError(f"{shortfall} (this machine; lower 'resources' in the study file)")


def local_cpus() -> float:
    """The CPUs an embedded Ray gives this machine (Ray's own count: cgroup limits included)."""
    from ray._private.utils import get_num_cpus

    return get_num_cpus()


def trial_slots(study: Study, resources: dict[str, float]) -> int:
    """How many trials can run at once: the cluster's CPUs (GPUs) over one trial's, capped by
    ``max_concurrent``."""
    import ray

    have = ray.cluster_resources()
    fits = [int(have.get(RAY_RESOURCE[k], 0) // v) for k, v in resources.items() if v > 0]
    slots = max(1, min(fits, default=1))
    return min(slots, study.file.max_concurrent) if study.file.max_concurrent else slots
