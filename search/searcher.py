"""Ray's ``OptunaSearch`` with the platform's semantics for failed and early-stopped trials.

- A trial that ends with a ``failure_reason`` (diverged, out of memory) reports its objective
  as NaN so Tune's bookkeeping stays consistent; Optuna is told FAIL, so TPE learns to avoid
  that region and never compares a NaN.
- A trial the scheduler stopped early (fewer epochs than ``max_epochs``) is told as PRUNED with
  its intermediate values (reported every epoch), as Optuna's own pruners do. Ray's searcher
  tells it COMPLETE with its last, early-epoch value, so TPE would compare a 1-epoch value
  with 9-epoch values as if both were final.
- With a :class:`~tracking.optuna_store.StudyMirror`, every trial is also written live into a
  persistent study (parameters, per-epoch values, final state) for Optuna's own tools.
- ``--warm-start``: earlier trials are added to the study before the first proposal
  (:meth:`PlatformOptunaSearch.add_evidence`).
- ``--scheduler hyperband``: the study gets Optuna's own :class:`~optuna.pruners.HyperbandPruner`
  (same grace, maximum and reduction factor) as its pruner. Ray never asks it to prune; it is
  there because Optuna's samplers then fit each trial's proposal on the trials of the same
  bracket only (Optuna's TPE + Hyperband, BOHB's idea: trials stopped at the same rungs are
  compared with each other), and it assigns each trial its bracket. :class:`BracketedHyperBand`
  (Ray's asynchronous Hyperband) runs every trial in the bracket the study assigned.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search.optuna import OptunaSearch

from tracking.optuna_store import StudyMirror
from trainables.checkpoint import FAILURE_KEY


def epoch_of(result: dict[str, Any]) -> int:
    """The epoch a trial's result is of (``training_iteration`` where it carries none)."""
    return int(result.get("epoch", result.get("training_iteration", 0)))


class PlatformOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells failed trials as FAIL and early-stopped ones as PRUNED."""

    def __init__(self, *args: Any, max_epochs: int | None = None, tell_pruned: bool = True,
                 mirror: StudyMirror | None = None,
                 hyperband: tuple[int, int, int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._tell_pruned = tell_pruned
        self._mirror = mirror
        if hyperband is not None:
            from optuna.pruners import HyperbandPruner

            grace, max_t, factor = hyperband
            pruner = HyperbandPruner(min_resource=grace, max_resource=max_t,
                                     reduction_factor=factor)
            pruner._try_initialization(self._ot_study)  # brackets now, not at a first prune
            self._ot_study.pruner = pruner

    @property
    def n_brackets(self) -> int:
        """Hyperband brackets of the study (1 without ``hyperband``)."""
        return getattr(self._ot_study.pruner, "_n_brackets", None) or 1

    def bracket_of(self, trial_id: str) -> int | None:
        """The Hyperband bracket the study assigned to Ray trial ``trial_id`` (None without
        ``hyperband``, or for a trial this searcher did not propose)."""
        from optuna.pruners import HyperbandPruner

        pruner, trial = self._ot_study.pruner, self._ot_trials.get(trial_id)
        if not isinstance(pruner, HyperbandPruner) or trial is None:
            return None
        return pruner._get_bracket_id(self._ot_study, trial)

    def add_evidence(self, trials: list[Any]) -> None:
        """Give the study finished trials of earlier searches (``--warm-start``)."""
        if trials:
            self._ot_study.add_trials(trials)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if self._mirror is not None and trial_id in self._ot_trials:
            trial = self._ot_trials[trial_id]
            self._mirror.started(trial_id, trial.params, trial.distributions)
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if FAILURE_KEY in result:
            return
        step = epoch_of(result)
        if self._reported(trial_id, step):
            return  # an epoch reported again after a resume (trainables.loop.FitSettings)
        # Optuna's intermediate values are indexed by epoch (OptunaSearch reads the step from
        # ``training_iteration``, which restarts when a multi-worker trial resumes)
        super().on_trial_result(trial_id, {**result, "training_iteration": step})
        if self._mirror is not None and isinstance(result.get(self.metric), int | float):
            self._mirror.reported(trial_id, step, float(result[self.metric]))

    def _reported(self, trial_id: str, step: int) -> bool:
        """Whether the trial's Optuna trial already holds an intermediate value at ``step``."""
        trial = self._ot_trials.get(trial_id)
        if trial is None or trial_id in self._completed_trials:
            return False
        return step in self._ot_study.get_trials(deepcopy=False)[trial.number].intermediate_values

    def _report_last(self, trial_id: str, result: dict[str, Any]) -> None:
        """Record the final result as an intermediate value too. Tune hands a trial's last
        result (the one a scheduler stops it on) to ``on_trial_complete`` only, so without
        this a trial ASHA stops after its first epoch reaches Optuna as PRUNED with no
        intermediate value at all, and TPE ranks it below every other trial."""
        value = result.get(self.metric)
        trial = self._ot_trials.get(trial_id)
        if trial is None or trial_id in self._completed_trials or \
                not isinstance(value, int | float) or isinstance(value, bool):
            return
        step = epoch_of(result)
        frozen = self._ot_study.get_trials(deepcopy=False)[trial.number]
        if step not in frozen.intermediate_values and value == value:  # NaN: not a value
            trial.report(float(value), step)
            if self._mirror is not None:
                self._mirror.reported(trial_id, step, float(value))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if result and FAILURE_KEY not in result and not error:
            self._report_last(trial_id, result)
        if result and FAILURE_KEY in result:
            result, error = None, True
        elif (result and not error and self._tell_pruned and self._max_epochs
              and int(result.get("epoch", result.get("training_iteration", self._max_epochs)))
              < self._max_epochs):
            result = None  # no value and no error: OptunaSearch tells PRUNED
        known = trial_id in self._ot_trials and trial_id not in self._completed_trials
        super().on_trial_complete(trial_id, result=result, error=error)
        if self._mirror is not None and known:
            told = self._ot_study.get_trials(deepcopy=False)[self._ot_trials[trial_id].number]
            self._mirror.finished(trial_id, told.state, told.value)

    def restore(self, checkpoint_path: str) -> None:
        """Tune's restore of a resumed search; the mirror drops trials Tune forgot."""
        super().restore(checkpoint_path)
        mirror = getattr(self, "_mirror", None)
        if mirror is not None:
            mirror.forget_others(set(self._ot_trials))


class BracketedHyperBand(AsyncHyperBandScheduler):
    """Ray's asynchronous Hyperband, each trial in the bracket the searcher's study assigned
    it (a random bracket, as Ray's own, for a trial the searcher does not know)."""

    def __init__(self, searcher: PlatformOptunaSearch, **kwargs: Any):
        super().__init__(brackets=searcher.n_brackets, **kwargs)
        self._searcher = searcher

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        bracket = self._searcher.bracket_of(trial.trial_id)
        if bracket is not None and bracket < len(self._brackets):
            self._trial_info[trial.trial_id] = self._brackets[bracket]
