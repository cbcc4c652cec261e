"""A real single-node Slurm cluster on this machine runs cluster/slurm/mismatch-study.sbatch.

The test writes a slurm.conf for localhost (one node with this machine's CPUs), starts munged,
slurmctld and slurmd as its own child processes (their state, spool, logs and munge socket in a
temporary folder), submits the quickstart's smoke profile with sbatch, waits for the job, checks
the study's Parquet rows and stops every process it started by its pid. Where Slurm or munge is
not installed, or the test does not run as root (slurmd starts jobs as their users), it is
skipped with the reason. Debian: ``apt-get install slurm-wlm munge`` (.ci/run does it).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mismatch.study.store import read_table
from mismatch.study.trials import load_study
from tests.ports import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
SBATCH_SCRIPT = REPO / "cluster" / "slurm" / "mismatch-study.sbatch"
STUDY, PROFILE = REPO / "studies" / "quickstart.yaml", "smoke"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")
JOB_TIMEOUT_S = 900
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
            "PREEMPTED"}


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def _skip_reason() -> str | None:
    missing = [d for d in DAEMONS if _which(d) is None]
    if missing:
        return f"Slurm cannot start here: {', '.join(missing)} not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "Slurm cannot start here: slurmd must run as root to start jobs"
    return None




@dataclass
class LocalSlurm:
    """munged, slurmctld and slurmd of a one-node cluster, all children of the test."""

    root: Path
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)  # the job inherits PATH: ray and mismatch of this venv
        return {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf"),
                "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}

    def write_config(self) -> None:
        for name in ("state", "spool"):
            (self.root / name).mkdir()
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        (self.root / "plugstack.conf").write_text("")
        r, user = self.root, pwd.getpwuid(os.geteuid()).pw_name
        lines = [
            "ClusterName=mismatchtest", f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}", f"SlurmUser={user}", f"SlurmdUser={user}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={r}/munge.sock",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool", f"SlurmctldPidFile={r}/slurmctld.pid",
            f"SlurmdPidFile={r}/slurmd.pid", f"SlurmctldLogFile={r}/slurmctld.log", f"SlurmdLogFile={r}/slurmd.log",
            f"PlugStackConfig={r}/plugstack.conf", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "MpiDefault=none", "SchedulerType=sched/builtin", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "ReturnToService=2", "MinJobAge=3600", "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        (self.root / "slurm.conf").write_text("\n".join(lines) + "\n")

    def start(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def up(self) -> None:
        r = self.root
        self.start("munged", [_which("munged"), "--foreground", "--force", f"--key-file={r}/munge.key",
                              f"--socket={r}/munge.sock", f"--pid-file={r}/munged.pid", f"--seed-file={r}/munged.seed",
                              f"--log-file={r}/munged.log"])
        self._wait(lambda: (r / "munge.sock").exists(), 30, "munged")
        self.start("slurmctld", [_which("slurmctld"), "-D", "-i"])
        self.start("slurmd", [_which("slurmd"), "-D", "-N", self.node])
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T").strip() == "idle", 90, "slurmd (node idle)")

    def _wait(self, ready, timeout: float, what: str) -> None:  # noqa: ANN001 - a predicate
        deadline = time.monotonic() + timeout
        while not ready():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.logs()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {timeout}s: {self.logs()}")
            time.sleep(0.5)

    def run(self, *args: str) -> str:
        out = subprocess.run([_which(args[0]), *args[1:]], env=self.env, capture_output=True, text=True, timeout=60)
        return out.stdout

    def job_state(self, job: str) -> dict[str, str]:
        text = self.run("scontrol", "show", "job", job, "-o")
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def logs(self) -> str:
        parts = []
        for name in ("munged.out", "slurmctld.out", "slurmd.out", "slurmctld.log", "slurmd.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)

    def leftover_pids(self) -> list[int]:
        """Processes still running whose command line names this cluster's folder (Ray's included)."""
        marks = (str(self.root).encode(), b"/tmp/mmray-")
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marks[0] in cmdline or (marks[1] in cmdline and self._is_ours(entry)):
                pids.append(int(entry.name))
        return pids

    def _is_ours(self, entry: Path) -> bool:
        # a Ray process of this test's job: its environment names this cluster's slurm.conf
        try:
            return str(self.root).encode() in (entry / "environ").read_bytes()
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM each daemon by its pid (slurmd first), then SIGKILL what is left."""
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=20)
        for pid in self.leftover_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def local_slurm():
    reason = _skip_reason()
    if reason:
        print(f"skipped: {reason}", file=sys.__stderr__)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="mmsl", dir="/tmp"))  # short: munge's and Ray's socket paths
    root.chmod(0o755)
    cluster = LocalSlurm(root)
    try:
        cluster.write_config()
        try:
            cluster.up()
        except (RuntimeError, TimeoutError) as err:
            reason = f"Slurm cannot start here: {str(err).splitlines()[0]}"
            print(f"skipped: {reason}\n{cluster.logs()}", file=sys.__stderr__)
            pytest.skip(reason)
        yield cluster
    finally:
        cluster.stop()
        time.sleep(1)
        leftovers = cluster.leftover_pids()
        shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, f"processes of the test's Slurm cluster still running: {leftovers}"


def test_sbatch_runs_a_smoke_study_on_a_local_slurm_cluster(local_slurm: LocalSlurm) -> None:
    cluster, storage = local_slurm, local_slurm.root / "runs"
    cpus = min(2, os.cpu_count() or 1)
    submit = subprocess.run(
        [_which("sbatch"), "--parsable", "--nodes=1", f"--cpus-per-task={cpus}", f"--output={cluster.root}/job-%j.out",
         str(SBATCH_SCRIPT), str(STUDY), "--profile", PROFILE, "--storage", str(storage), "--tracking", "none"],
        env=cluster.env, capture_output=True, text=True, timeout=60, cwd=cluster.root)
    assert submit.returncode == 0, submit.stderr + cluster.logs()
    job = submit.stdout.strip().split(";")[0]

    deadline, state = time.monotonic() + JOB_TIMEOUT_S, {}
    while time.monotonic() < deadline:
        state = cluster.job_state(job)
        if state.get("JobState") in FINISHED:
            break
        time.sleep(1)
    out_file = cluster.root / f"job-{job}.out"
    output = out_file.read_text(errors="replace") if out_file.exists() else "(no job output)"
    if state.get("JobState") not in FINISHED:
        subprocess.run([_which("scancel") or "scancel", job], env=cluster.env, timeout=60)
    assert state.get("JobState") == "COMPLETED" and state.get("ExitCode") == "0:0", f"{state}\n{output[-4000:]}"

    # per-job port and temp folder, derived from the job id, and the temp folder removed at the end
    port = 10000 + (int(job) % 500) * 100
    assert re.search(rf"Ray head on {re.escape(cluster.node)} \([\d.]+:{port}\)", output), output[:2000]
    assert f"temp /tmp/mmray-{job}" in output and not Path(f"/tmp/mmray-{job}").exists()

    study = load_study(STUDY, PROFILE, storage=str(storage))
    expected = {t.trial_id() for t in study.trials()}
    trials = read_table(str(storage), study.name, "trials")
    assert set(trials["trial_id"]) == expected and trials["trial_id"].is_unique, trials
    assert (trials["status"] == "completed").all()
    images = read_table(str(storage), study.name, "images")
    assert set(images["trial_id"]) == expected and len(images) > 0
