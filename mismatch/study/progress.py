"""A one-line live progress report of a study run (Ray's own tables only with --verbose).

Ray is imported only when :func:`Progress` builds the Tune callback, never at import time,
so loading a study (which may name a search's best value) does not import Ray.
"""

from __future__ import annotations

import functools
import time
from typing import Any, TextIO

from mismatch.study.status import estimate_eta, format_eta


class ProgressLine:
    """Prints ``[study] done/total, failed, running, ETA`` whenever a trial starts or ends.

    The ``on_trial_*`` methods have the signatures of Ray Tune's ``Callback``;
    :func:`Progress` mixes them into one.
    """

    def __init__(self, study: str, total: int, done: int, stream: TextIO) -> None:
        self.study, self.total, self.done, self.stream = study, total, done, stream
        self.failed = 0
        self.running: dict[str, float] = {}
        self.durations: list[float] = []
        self.max_parallel = 1

    def _line(self) -> None:
        remaining = self.total - self.done - self.failed
        eta = estimate_eta(self.durations, remaining, self.max_parallel)
        print(f"[{self.study}] {self.done}/{self.total} done, {self.failed} failed, {len(self.running)} running, "
              f"ETA {format_eta(eta)}", file=self.stream, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running[trial.trial_id] = time.monotonic()
        self.max_parallel = max(self.max_parallel, len(self.running))
        self._line()

    def _finish(self, trial: Any) -> float:
        started = self.running.pop(trial.trial_id, None)
        return time.monotonic() - started if started is not None else 0.0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        elapsed = self._finish(trial)
        if (trial.last_result or {}).get("status_failed"):
            self.failed += 1
        else:
            self.done += 1
            self.durations.append(elapsed)
        self._line()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial)
        self.failed += 1
        self._line()


@functools.cache
def _callback_class() -> type:
    from ray.tune import Callback

    return type("Progress", (ProgressLine, Callback), {"__doc__": ProgressLine.__doc__, "__module__": __name__})


def Progress(study: str, total: int, done: int, stream: TextIO) -> Any:  # noqa: N802 (was a class)
    """The progress line as a Ray Tune ``Callback`` (imports Ray on the first call)."""
    return _callback_class()(study, total, done, stream)
