"""A real two-node Ray cluster on loopback: `ray start` on 127.0.0.1 (head) and 127.0.0.2.

Each node runs `ray start --block` in its own process session, so the test can stop a node
(and every process it started) by that session's id. Token authentication stays on, with a
token generated into the test's own folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.ports import free_port

RAY = str(Path(sys.executable).with_name("ray"))




@dataclass
class LoopbackCluster:
    """The running nodes, the environment a driver needs, and the address to join."""

    root: Path
    address: str
    env: dict[str, str]
    nodes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_node(self, name: str, ip: str, head: bool) -> None:
        args = [RAY, "start", "--block", f"--node-ip-address={ip}", "--num-cpus=2", "--disable-usage-stats",
                f"--resources={{\"{name}\": 1}}"]
        if head:
            port = self.address.rsplit(":", 1)[1]
            args += ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={self.root / 'ray'}"]
        else:
            args += [f"--address={self.address}"]
        log = open(self.root / f"{name}.log", "w")
        self.nodes[name] = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def alive_nodes(self) -> list[dict]:
        """Alive nodes with their custom resources, asked of the cluster by a short driver."""
        code = (f"import json, ray; ray.init(address={self.address!r}, log_to_driver=False, logging_level='ERROR');"
                "print(json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], 'resources': n['Resources']}"
                " for n in ray.nodes()]))")
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        import json

        lines = [line for line in out.stdout.splitlines() if line.startswith("[")]
        return json.loads(lines[-1]) if lines else []

    def wait_for(self, n_alive: int, timeout: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = self.alive_nodes()
            if sum(n["alive"] for n in nodes) >= n_alive:
                return nodes
            time.sleep(1)
        raise TimeoutError(f"cluster did not reach {n_alive} alive nodes")

    def kill_node(self, name: str) -> None:
        """SIGKILL every process of one node (its session), as a crashed machine would."""
        proc = self.nodes[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def leftover_pids(self) -> list[int]:
        """Processes still running whose command line names this cluster's folder or address."""
        marks = (str(self.root).encode(), self.address.encode())
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if any(m in cmdline for m in marks):
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        """SIGKILL every node's session, then any straggler by its pid.

        A graceful SIGTERM of `ray start --block` waited out its 20 s timeout in CI on every
        run; nothing here tests a graceful stop, and the leftover check below still proves
        that no process of the cluster survives.
        """
        for proc in self.nodes.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
        # Ray workers of a node outlive its raylet for a moment; end any straggler by its pid.
        deadline = time.monotonic() + 20
        while (leftovers := self.leftover_pids()) and time.monotonic() < deadline:
            for pid in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)


@pytest.fixture
def loopback_cluster():
    if shutil.which(RAY) is None and not Path(RAY).exists():
        pytest.skip("the ray CLI is not installed")
    # Unix socket paths must stay short: a folder directly under /tmp.
    root = Path(tempfile.mkdtemp(prefix="mmrt", dir="/tmp"))
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    cluster = LoopbackCluster(root=root, address=f"127.0.0.1:{free_port()}", env=env)
    try:
        cluster.start_node("node_a", "127.0.0.1", head=True)
        cluster.wait_for(1)
        cluster.start_node("node_b", "127.0.0.2", head=False)
        cluster.wait_for(2)
        yield cluster
    finally:
        cluster.stop()
        leftovers = cluster.leftover_pids()
        shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, f"processes of the test cluster still running: {leftovers}"
