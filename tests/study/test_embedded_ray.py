"""The embedded local Ray of a driver without ``--address``: loopback only, token auth on."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys

import pytest

from mismatch.study import ray_session

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture
def fake_init(monkeypatch):
    """``ray.init`` replaced by a recorder of its kwargs and of Ray's cluster switch at the call."""
    ray = pytest.importorskip("ray")
    from ray._private import ray_constants

    calls: list[dict] = []

    def init(**kwargs):
        calls.append({**kwargs, "clusters": ray_constants.ENABLE_RAY_CLUSTER})

    for var in (*AUTH_VARS, "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "RAY_AIR_NEW_OUTPUT"):
        monkeypatch.delenv(var, raising=False)  # restored at teardown, whatever init_ray sets
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray_session, "_reload_ray_auth_config", lambda: None)  # keep this process's Ray config
    return calls, ray_constants


def test_the_embedded_ray_is_asked_for_loopback_and_a_fresh_token(fake_init):
    calls, ray_constants = fake_init
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_session.init_ray(None, verbose=False)
    (call,) = calls
    assert call["_node_ip_address"] == "127.0.0.1" and call["include_dashboard"] is False
    assert call["clusters"] is False  # else ray.init swaps 127.0.0.1 for the routable address
    assert ray_constants.ENABLE_RAY_CLUSTER is before  # restored after the call
    assert os.environ["RAY_AUTH_MODE"] == "token"
    first = os.environ["RAY_AUTH_TOKEN"]
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    os.environ.pop("RAY_AUTH_TOKEN")
    ray_session.init_ray(None, verbose=False)
    assert os.environ["RAY_AUTH_TOKEN"] != first  # random per run, not a fixed value


def test_a_token_of_the_user_is_kept_and_a_cluster_address_is_left_alone(fake_init, monkeypatch):
    calls, _ = fake_init
    monkeypatch.setenv("RAY_AUTH_TOKEN", "mine")
    ray_session.init_ray(None, verbose=False)
    assert os.environ["RAY_AUTH_TOKEN"] == "mine"
    monkeypatch.delenv("RAY_AUTH_MODE")
    ray_session.init_ray("ray://head:10001", verbose=False)
    assert calls[-1]["address"] == "ray://head:10001" and "_node_ip_address" not in calls[-1]
    assert "RAY_AUTH_MODE" not in os.environ  # a running cluster's own auth settings apply


PROBE = """
import json, os
from ray import tune  # noqa: F401  imported before Ray starts, as `mismatch search` does
from mismatch.study.ray_session import init_ray
init_ray(None, False)
import psutil, ray  # psutil: Ray's vendored copy, importable once ray is
from ray._raylet import AuthenticationMode, get_authentication_mode
me = psutil.Process()
procs = [me, *me.children(recursive=True)]
listen = [[p.name(), c.laddr.ip, c.laddr.port] for p in procs for c in p.net_connections(kind="inet")
          if c.status == psutil.CONN_LISTEN]
gcs = [p.environ() for p in procs if p.name() == "gcs_server"]
print(json.dumps({"listen": listen, "token_mode": get_authentication_mode() == AuthenticationMode.TOKEN,
                  "gcs_auth": [env.get("RAY_AUTH_MODE") for env in gcs],
                  "gcs_has_token": [bool(env.get("RAY_AUTH_TOKEN")) for env in gcs],
                  "task": ray.get(ray.remote(lambda: 7).remote())}))
ray.shutdown()
"""


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@pytest.mark.slow
def test_every_socket_of_the_embedded_ray_listens_on_loopback_with_token_auth(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env["HOME"] = str(tmp_path)  # a per-run token must not land in ~/.ray/auth_token
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    names = {name for name, _, _ in found["listen"]}
    assert {"gcs_server", "raylet"} <= names, found["listen"]
    exposed = [entry for entry in found["listen"] if not _loopback(entry[1])]
    assert exposed == [], f"listening beyond loopback: {exposed}"
    assert found["token_mode"] is True and found["gcs_auth"] == ["token"] and found["gcs_has_token"] == [True]
    assert found["task"] == 7  # the cluster works with auth on
    assert not (tmp_path / ".ray" / "auth_token").exists()
    assert not re.search(r"\b[0-9a-f]{64}\b", proc.stdout + proc.stderr)  # the token is never printed


def test_loopback_recognises_mapped_ipv4():
    assert _loopback("::ffff:127.0.0.1") and _loopback("127.0.0.1") and _loopback("::1")
    assert not _loopback("::") and not _loopback("0.0.0.0") and not _loopback("192.0.2.2")
