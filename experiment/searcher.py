"""Ray's ``OptunaSearch`` with the platform's semantics for failed and early-stopped trials.

- A trial that ends with a ``failure_reason`` (diverged, out of memory) reports its objective
  as NaN so Tune's bookkeeping stays consistent; Optuna is told FAIL, so TPE learns to avoid
  that region and never compares a NaN.
- A trial the scheduler stopped early (fewer epochs than ``max_epochs``) is told as PRUNED with
  its intermediate values (reported every epoch), as Optuna's own pruners do. Ray's searcher
  tells it COMPLETE with its last, early-epoch value, so TPE would compare a 1-epoch value
  with 9-epoch values as if both were final.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch

from trainables.trial import FAILURE_KEY


class PlatformOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells failed trials as FAIL and early-stopped ones as PRUNED."""

    def __init__(self, *args: Any, max_epochs: int | None = None, tell_pruned: bool = True,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._tell_pruned = tell_pruned

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if FAILURE_KEY in result:
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if result and FAILURE_KEY in result:
            result, error = None, True
        elif (result and not error and self._tell_pruned and self._max_epochs
              and int(result.get("epoch", result.get("training_iteration", self._max_epochs)))
              < self._max_epochs):
            result = None  # no value and no error: OptunaSearch tells PRUNED
        super().on_trial_complete(trial_id, result=result, error=error)
