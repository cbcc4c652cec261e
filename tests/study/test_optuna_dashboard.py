"""A search's persisted Optuna study opens in optuna-dashboard (docs/studies.md).

The journal is written through :func:`mismatch.study.search.optuna_storage` (the storage a search
uses, at its default place ``<storage>/<study>/optuna/journal.log``) and with the study name a
search gives (``<study>.<method>``); optuna-dashboard is started on 127.0.0.1 as a subprocess,
its study list is read over its JSON API, and the process is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mismatch.study.search import optuna_storage
from mismatch.study.study_file import SearchSpec
from tests.ports import free_port

STUDY, METHOD = "dash", "mismatch"




def _write_search(storage: Path) -> Path:
    """Four trials of a search of ``alpha``, stored as ``mismatch search`` stores them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=f"{STUDY}.{METHOD}", direction="maximize",
                                storage=optuna_storage(SearchSpec(), str(storage), STUDY),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 0.6 - abs(t.suggest_float("alpha", 1e-4, 1e-2, log=True) - 0.002), n_trials=4)
    # a candidate pruned at its first rung, told as RungSearch tells it (mismatch.study.rung_search)
    pruned = study.ask({"alpha": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    pruned.report(0.1, 1)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    return storage / STUDY / "optuna" / "journal.log"


def _dashboard() -> list[str]:
    exe = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable)) or shutil.which("optuna-dashboard")
    if exe is None:
        pytest.skip("optuna-dashboard not installed (pip install 'mismatch[dashboard]')")
    return [exe]


def _get_json(url: str, deadline: float, proc: subprocess.Popen) -> dict:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if proc.poll() is not None:
                raise AssertionError(f"optuna-dashboard exited with {proc.returncode}: {proc.stdout.read()}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_search_journal_opens_in_optuna_dashboard(tmp_path: Path) -> None:
    command = _dashboard()
    journal = _write_search(tmp_path / "runs")
    assert journal.is_file()
    port = free_port()
    proc = subprocess.Popen([*command, str(journal), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/api/studies"
    try:
        listing = _get_json(base, time.monotonic() + 120, proc)
        ids = [s["study_id"] for s in listing["study_summaries"]]
        detail = _get_json(f"{base}/{ids[0]}", time.monotonic() + 60, proc) if ids else {}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
    studies = {s["study_name"]: s for s in listing["study_summaries"]}
    assert list(studies) == [f"{STUDY}.{METHOD}"]
    assert studies[f"{STUDY}.{METHOD}"]["directions"] == ["maximize"]
    assert detail["name"] == f"{STUDY}.{METHOD}" and len(detail["trials"]) == 5
    assert [t["state"] for t in detail["trials"]] == ["Complete"] * 4 + ["Pruned"]  # shown as pruned
    assert [v["step"] for v in detail["trials"][-1]["intermediate_values"]] == [1]
    assert [p["name"] for p in detail["union_search_space"]] == ["alpha"]
    assert proc.returncode is not None  # stopped
