"""The study progress callback, driven with fake Tune trials (no Ray)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from mismatch.study.progress import HEARTBEAT_S, PlainProgress, ProgressTracker, TrialLabel, eta_seconds, trial_labels


@dataclass
class FakeTrial:
    """What the callback reads of a Tune ``Trial``."""

    trial_id: str
    status: str = "PENDING"
    config: dict[str, Any] = field(default_factory=dict)
    last_result: dict[str, Any] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _config(method: str, labelled: int, fold: int, epochs: int = 3) -> dict[str, Any]:
    return {"trial": {"id": "x", "spec": {"method": {"name": method}, "protocol": {"labelled_slices": labelled, "fold": fold},
                                          "train": {"epochs": epochs}}}}


def _plain(total: int = 4, slots: int | None = 2, labels: dict[str, TrialLabel] | None = None) -> tuple[PlainProgress, io.StringIO, Clock]:
    stream, clock = io.StringIO(), Clock()
    return PlainProgress("qs", total, 0, stream, slots=slots, labels=labels, clock=clock, wall_clock=lambda: 0.0), stream, clock


@pytest.mark.parametrize(("walls", "remaining", "slots", "expected"), [
    ([100.0, 140.0], 5, 2, 300.0),   # mean 120 s x 5 left / 2 slots
    ([60.0], 1, 4, 60.0),            # the last trial alone takes a whole trial's time
    ([30.0, 30.0, 90.0], 6, 3, 100.0),
    ([50.0], 0, 2, 0.0),
    ([], 3, 2, None),                # nothing finished yet: unknown
])
def test_eta_is_mean_wall_time_times_remaining_over_slots(walls, remaining, slots, expected):
    assert eta_seconds(walls, remaining, slots) == expected


def test_eta_uses_the_wall_time_the_driver_sees_including_scheduling():
    progress, _, clock = _plain(total=3, slots=1)
    a = FakeTrial("a", "RUNNING", _config("sup1", 2, 0))
    clock.now += 5  # Ray starts a worker process before Tune says the trial started
    progress.on_trial_start(0, [a], a)
    clock.now += 40
    a.status, a.last_result = "TERMINATED", {"status_failed": 0, "done_trial": 1}
    progress.on_trial_complete(1, [a], a)
    b = FakeTrial("b", "RUNNING", _config("sup1", 2, 1))
    clock.now += 15  # the next worker's start-up: counted from the moment the slot was free
    progress.on_trial_start(2, [a, b], b)
    clock.now += 40
    b.status, b.last_result = "TERMINATED", {"status_failed": 0, "done_trial": 1}
    progress.on_trial_complete(3, [a, b], b)
    assert progress.walls == [45.0, 55.0]
    assert progress.eta() == 50.0  # 1 left x mean 50 s on 1 slot


def test_a_died_worker_does_not_inflate_running():
    progress, _, _ = _plain(total=4, slots=2)
    trials = [FakeTrial(t, config=_config("sup1", 2, i)) for i, t in enumerate("abcd")]
    a, b, c, d = trials
    for t in (a, b):
        t.status = "RUNNING"
        progress.on_trial_start(0, trials, t)
    a.status = "PENDING"  # its worker died: Tune puts it back in the queue and starts c
    progress.on_trial_recover(1, trials, a)
    c.status = "RUNNING"
    progress.on_trial_start(2, trials, c)
    a.status = "RUNNING"  # Tune's list is stale for a moment: 3 say RUNNING on 2 slots
    progress.on_trial_start(3, trials, a)
    assert len(progress.running_ids) == 2
    assert "2 running" in progress.summary()
    b.status = "TERMINATED"
    b.last_result = {"status_failed": 0}
    progress.on_trial_complete(4, trials, b)
    assert sorted(progress.running_ids) == ["a", "c"] and progress.done == 1


def test_running_counts_what_tune_says_not_started_minus_finished():
    progress = ProgressTracker("qs", 4, 0, slots=4)
    trials = [FakeTrial(t, "RUNNING", _config("sup1", 2, 0)) for t in "ab"]
    for t in trials:
        progress.on_trial_start(0, trials, t)
        progress.on_trial_start(0, trials, t)  # a restarted trial is started twice
    trials[0].status = "ERROR"
    progress.on_step_end(1, trials)
    assert progress.running_ids == ["b"]


def test_plain_mode_prints_one_timestamped_line_per_event():
    labels = {"a": TrialLabel("mismatch", "width=8", 5, 1, 3)}
    progress, stream, clock = _plain(total=2, slots=2, labels=labels)
    a = FakeTrial("a", "PENDING")  # Tune marks it RUNNING just after on_trial_start
    progress.on_trial_start(0, [a], a)
    a.status = "RUNNING"
    progress.on_trial_result(1, [a], a, {"epoch": 1, "val_iou": 0.41234, "loss_total": 0.5})
    progress.on_trial_result(2, [a], a, {"epoch": 2, "val_iou": 0.5})
    progress.on_trial_result(3, [a], a, {"status_failed": 0, "done_trial": 1})  # the final report: no line
    clock.now += 75
    a.status, a.last_result = "TERMINATED", {"status_failed": 0}
    progress.on_trial_complete(4, [a], a)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert all(re.match(r"^\d\d:\d\d:\d\d \[qs\] ", line) for line in lines)
    assert "started mismatch[width=8] L=5 fold 1 | 0/2 done, 0 failed, 1 running, ETA ?" in lines[0]
    assert "mismatch[width=8] L=5 fold 1 epoch 1/3 IoU 0.412 |" in lines[1]
    assert "epoch 2/3 IoU 0.500" in lines[2]
    assert "finished mismatch[width=8] L=5 fold 1 in 1m15s | 1/2 done, 0 failed, 0 running, ETA 1m15s" in lines[3]


def test_plain_mode_heartbeat_every_30s_only_while_something_runs():
    progress, stream, clock = _plain(total=2, slots=1)
    a = FakeTrial("a", "RUNNING", _config("sup1", 2, 0, epochs=5))
    progress.on_trial_start(0, [a], a)
    progress.on_step_end(1, [a])
    clock.now += HEARTBEAT_S - 1
    progress.on_step_end(2, [a])
    assert len(stream.getvalue().splitlines()) == 1  # no line before 30 s of silence
    clock.now += 1
    progress.on_step_end(3, [a])
    progress.on_step_end(4, [a])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].endswith("0/2 done, 0 failed, 1 running, ETA ? | running: sup1 L=2 fold 0 epoch 0/5")
    a.status = "TERMINATED"
    clock.now += 5 * HEARTBEAT_S
    progress.on_step_end(5, [a])
    assert len(stream.getvalue().splitlines()) == 2  # nothing runs: silence


def test_a_trial_failed_for_good_counts_as_failed_and_not_in_the_eta():
    progress, stream, clock = _plain(total=2, slots=1)
    a = FakeTrial("a", "RUNNING", _config("sup1", 2, 0))
    progress.on_trial_start(0, [a], a)
    clock.now += 10
    a.status, a.last_result = "TERMINATED", {"status_failed": 1, "error": "DataError: no cases"}
    progress.on_trial_complete(1, [a], a)
    assert (progress.done, progress.failed, progress.walls) == (0, 1, [])
    assert "failed sup1 L=2 fold 0: DataError: no cases | 0/2 done, 1 failed" in stream.getvalue()


def test_trial_labels_name_the_settings_that_vary_within_a_method(tmp_path):
    from mismatch.study.trials import load_study

    study = load_study("studies/quickstart.yaml", profile="smoke")
    labels = trial_labels(study.trials())
    texts = sorted(label.text() for label in labels.values())
    assert texts == ["mismatch L=2 fold 0", "mismatch L=2 fold 1", "sup1 L=2 fold 0", "sup1 L=2 fold 1"]
    assert {label.epochs for label in labels.values()} == {1}
    varied = tmp_path / "varied.yaml"
    varied.write_text("name: v\nbase: {data: {synthetic: {kind: vessels, cases: 6, size: [32, 32], slices: 10}},\n"
                      "  protocol: {labelled_cases: 1, unlabelled_cases: 2, validation_cases: 1, test_cases: 2}}\n"
                      "methods: [{name: sup1, width: [8, 16]}, {name: mismatch}]\ngrid: {fold: [0]}\n")
    texts = sorted(label.text() for label in trial_labels(load_study(varied).trials()).values())
    assert texts == ["mismatch L=5 fold 0", "sup1[width=16] L=5 fold 0", "sup1[width=8] L=5 fold 0"]


def test_the_tune_callback_is_plain_off_a_terminal_and_live_on_one():
    from ray.tune import Callback

    from mismatch.study.progress import LiveProgress, Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    plain, live = Progress("qs", 4, 0, io.StringIO(), slots=2), Progress("qs", 4, 0, Tty(), slots=2)
    assert isinstance(plain, PlainProgress) and isinstance(plain, Callback)
    assert isinstance(live, LiveProgress) and isinstance(live, Callback)
    assert isinstance(Progress("qs", 4, 0, Tty(), live=False), PlainProgress)


@pytest.mark.parametrize(("cluster", "max_concurrent", "expected"), [
    ({"CPU": 16.0}, None, 16),
    ({"CPU": 16.0}, 3, 3),
    ({"CPU": 16.0, "GPU": 1.0}, None, 4),  # 0.25 GPU per trial: 4 fit
    ({"CPU": 1.0}, None, 1),
])
def test_trial_slots_are_what_fits_at_once(monkeypatch, cluster, max_concurrent, expected):
    import ray

    from mismatch.study.resources import trial_slots

    class _File:
        pass

    class _Study:
        file = _File()

    _Study.file.max_concurrent = max_concurrent
    monkeypatch.setattr(ray, "cluster_resources", lambda: cluster)
    gpu = 0.25 if "GPU" in cluster else 0
    assert trial_slots(_Study(), {"cpu": 1, "gpu": gpu}) == expected


def test_live_mode_shows_each_running_trial_with_its_epoch_and_iou():
    from mismatch.study.progress import LiveProgress

    stream, clock = io.StringIO(), Clock()
    labels = {"a": TrialLabel("mismatch", "width=8", 5, 0, 3), "b": TrialLabel("sup1", "", 5, 1, 3)}
    progress = LiveProgress("qs", 3, 0, stream, slots=2, labels=labels, clock=clock)
    a, b = FakeTrial("a", "RUNNING"), FakeTrial("b", "RUNNING")
    progress.on_trial_start(0, [a, b], a)
    progress.on_trial_start(0, [a, b], b)
    progress.on_trial_result(1, [a, b], a, {"epoch": 2, "val_iou": 0.4})
    progress.on_experiment_end([a, b])
    rows = [line for line in stream.getvalue().splitlines() if "fold" in line]
    assert "[qs] 0/3 done, 0 failed, 2 running, ETA ?" in stream.getvalue()
    assert re.search(r"mismatch\[width=8\] L=5 fold 0\s*│\s*2/3\s*│\s*0\.400", rows[-2]), rows
    assert re.search(r"sup1 L=5 fold 1\s*│\s*0/3\s*│\s*-", rows[-1]), rows
