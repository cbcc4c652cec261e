"""Ray for a study driver: join a running cluster, or start the embedded local Ray.

The embedded Ray listens on 127.0.0.1 only and has Ray's token authentication on
(cluster/README.md, Security). It reaches into two of Ray's private modules, kept here alone:
``ray._private.ray_constants`` (to keep the loopback address) and ``ray._raylet`` (to reload
the auth settings put in this process's environment).
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

#: The only address the embedded local Ray listens on: it serves this driver alone.
LOOPBACK = "127.0.0.1"


def init_ray(address: str | None, verbose: bool) -> None:
    """Join ``address`` or start an embedded local Ray; quiet unless ``verbose``."""
    import ray

    if not verbose:  # our own Parquet rows are the results; skip Tune's per-trial JSON/CSV/TB files
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    kwargs: dict[str, Any] = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
    if ray.is_initialized():  # a second study run in this process (the rounds of --until-decided) reuses it
        return
    if address:
        ray.init(address=address, **kwargs)
    else:
        start_local_ray(**kwargs)


def start_local_ray(**kwargs: Any) -> None:
    """Start the embedded Ray of a driver without ``--address``, reachable from this machine only.

    Every Ray process listens on 127.0.0.1, and Ray's token authentication is on: with no
    ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` of the user's, a random token for this run is
    put in this process's environment (Ray's processes inherit it); it is never printed or
    written to disk. See cluster/README.md (Security).
    """
    import ray
    from ray._private import ray_constants

    os.environ["RAY_AUTH_MODE"] = "token"
    if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    _reload_ray_auth_config()
    # ray.init swaps a loopback _node_ip_address for the machine's routable address unless Ray
    # clusters are off (its macOS/Windows mode); off for this call only, 127.0.0.1 is kept.
    clusters = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(include_dashboard=False, _node_ip_address=LOOPBACK, **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = clusters


def _reload_ray_auth_config() -> None:
    """Make this process see the auth settings just put in its environment (Ray caches its
    config and token at first use, e.g. by an earlier ``import ray.tune``)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
