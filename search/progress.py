"""A one-line live view of a search (Ray's full-width tables come back with ``--verbose``).

    [  3m12s] trials 14/200 done (9 stopped early, 1 failed), 2 running · best val_top1
    0.2341 (trial_3f2a) · ~41m left
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray.tune import Callback

from trainables.checkpoint import FAILURE_KEY


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressLine(Callback):
    """Prints the search's state at most every ``every`` seconds and when a trial ends."""

    def __init__(self, total: int, metric: str, mode: str, max_epochs: int, every: float = 15.0):
        self.total, self.metric, self.mode = total, metric, mode
        self.max_epochs, self.every = max_epochs, every
        self.start = time.monotonic()
        self.last_print = 0.0
        self.best: tuple[float, str] | None = None
        self.ended: dict[str, str] = {}  # trial id → finished / stopped / failed

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["start"] = None
        return state

    def setup(self, **info: Any) -> None:
        self.start = time.monotonic()

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best[0] if self.mode == "max" else value < self.best[0]

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value) and self._better(value):
            self.best = (float(value), f"trial_{trial.trial_id}")
        self._maybe_print(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        epochs = int(last.get("epoch", last.get("training_iteration", 0)))
        if FAILURE_KEY in last:
            self.ended[trial.trial_id] = "failed"
        else:
            self.ended[trial.trial_id] = "stopped" if epochs < self.max_epochs else "finished"
        self._maybe_print(trials, force=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended[trial.trial_id] = "failed"
        self._maybe_print(trials, force=True)

    def line(self, running: int) -> str:
        """The progress line for the current state."""
        elapsed = time.monotonic() - (self.start or time.monotonic())
        done = len(self.ended)
        stopped = sum(1 for v in self.ended.values() if v == "stopped")
        failed = sum(1 for v in self.ended.values() if v == "failed")
        text = f"[{_duration(elapsed):>7}] trials {done}/{self.total} done"
        details = [f"{stopped} stopped early"] if stopped else []
        if failed:
            details.append(f"{failed} failed")
        if details:
            text += f" ({', '.join(details)})"
        text += f", {running} running"
        if self.best is not None:
            text += f" · best {self.metric} {self.best[0]:.4g} ({self.best[1]})"
        if 0 < done < self.total:
            text += f" · ~{_duration(elapsed / done * (self.total - done))} left"
        return text

    def _maybe_print(self, trials: list, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_print < self.every:
            return
        self.last_print = now
        # Ray calls on_trial_complete/on_trial_error before the trial leaves RUNNING
        running = sum(1 for t in trials if getattr(t, "status", "") == "RUNNING"
                      and t.trial_id not in self.ended)
        print(self.line(running), file=sys.stdout, flush=True)
