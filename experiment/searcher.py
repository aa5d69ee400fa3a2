"""Ray's ``OptunaSearch`` with the platform's failure semantics.

A trial that ends with a ``failure_reason`` (diverged, out of memory) reports its objective as
NaN so Tune's bookkeeping stays consistent; Optuna must see it as FAIL, not as a completed
trial, so TPE learns to avoid that region and never compares a NaN.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch

from trainables.trial import FAILURE_KEY


class PlatformOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells failed trials to Optuna as FAIL."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if FAILURE_KEY in result:
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if result and FAILURE_KEY in result:
            result, error = None, True
        super().on_trial_complete(trial_id, result=result, error=error)
