"""``--warm-start EXPERIMENT[,EXPERIMENT...]``: earlier searches' trials as the study's evidence.

The trial runs of every search of the same space in the named MLflow experiments (read through
:class:`tracking.record.SearchRecord`, so from any machine that shares the tracking store) are
given to the new search's Optuna study before its first proposal, with their per-epoch values
as intermediate values:

- a trial that ran every epoch of its search: COMPLETE, its value the last epoch's;
- a trial stopped early (or one still open when its search was interrupted, once it reported
  an epoch): PRUNED, ranked by TPE at the furthest epoch it reached, as Optuna's own pruned
  trials are;
- a failed trial: FAIL (TPE keeps away from it).

A trial's parameters are replayed through the current space (its define-by-run function, with
any ``--space-file`` narrowing): one whose parameters the space would no longer ask for, or no
longer allows, or whose constants changed, does not fit and is skipped; the counts are printed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import BadInput


@dataclass
class WarmStart:
    """The trials to give the study, and what was read."""

    trials: list[Any] = field(default_factory=list)  # optuna FrozenTrial
    searches: int = 0
    skipped_unfit: int = 0
    skipped_empty: int = 0

    def describe(self, names: list[str]) -> str:
        return (f"warm start from {', '.join(names)}: {len(self.trials)} trials of "
                f"{self.searches} earlier search(es)"
                + (f"; {self.skipped_unfit} skipped: their parameters no longer fit the space"
                   if self.skipped_unfit else "")
                + (f"; {self.skipped_empty} skipped: no epoch reported" if self.skipped_empty
                   else ""))


def parse_names(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``A,B`` (or a list) → ``["A", "B"]``; raises :class:`BadInput` for an empty name."""
    if value is None or value == "" or value == []:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in items]
    if not all(names):
        raise BadInput(f"--warm-start {value!r}: an empty experiment name; write "
                       "--warm-start NAME[,NAME...]")
    return list(dict.fromkeys(names))


def _typed(text: str) -> Any:
    """A parameter as MLflow holds it (text) → the Python value it was written from."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def replay(suggest: Any, info: Any, params: Mapping[str, Any]) -> tuple[dict, dict] | None:
    """``(params, distributions)`` the space gives ``params`` (None if they no longer fit)."""
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    given = {k: v if not isinstance(v, str) else _typed(v) for k, v in params.items()}
    study.enqueue_trial(given)
    trial = study.ask()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            constants = suggest(trial, info) or {}
        except Exception:  # noqa: BLE001 - a value the space's own code cannot take
            return None
    for name, distribution in trial.distributions.items():
        if name not in params:
            return None  # the space now asks for a parameter this trial never had
        try:
            inside = distribution._contains(distribution.to_internal_repr(trial.params[name]))
        except (ValueError, TypeError):
            inside = False
        if not inside or str(trial.params[name]) != str(params[name]):
            return None
    from trainables.checkpoint import flatten

    config = flatten({**trial.params, **constants})
    if any(str(v) != str(params.get(k)) for k, v in config.items()):
        return None  # a constant (or a parameter the space no longer searches) changed
    return dict(trial.params), dict(trial.distributions)


def check_sources(names: list[str], space_name: str, tracking_uri: str) -> None:
    """Refuse, before any work, an experiment that does not exist or holds no search of
    ``space_name`` (raises :class:`BadInput`; creates nothing, not even a SQLite file)."""
    from mlflow.tracking import MlflowClient

    from tracking.record import search_parents

    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        if not database.exists():
            raise BadInput(f"--warm-start {names[0]}: no such MLflow experiment ({database} "
                           "does not exist); name an earlier search's --experiment and its "
                           "--mlflow-uri")
    client = MlflowClient(tracking_uri)
    for name in names:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise BadInput(f"--warm-start {name}: no such MLflow experiment in {tracking_uri}; "
                           "name an earlier search's --experiment (see `launch.py compare`)")
        if not any(p.data.tags.get("space") == space_name
                   for p in search_parents(client, found.experiment_id)):
            raise BadInput(f"--warm-start {name}: it holds no search of space '{space_name}'; "
                           "warm-start from a search of the same space")


def collect(names: list[str], space: Any, info: Any, tracking_uri: str) -> WarmStart:
    """The earlier trials of ``space`` in MLflow experiments ``names`` (raises
    :class:`BadInput` for an experiment that does not exist or holds no search of it)."""
    import optuna
    from mlflow.tracking import MlflowClient

    from tracking.record import SearchRecord, search_parents

    check_sources(names, space.name, tracking_uri)
    client = MlflowClient(tracking_uri)
    out = WarmStart()
    for name in names:
        found = client.get_experiment_by_name(name)
        parents = [p for p in search_parents(client, found.experiment_id)
                   if p.data.tags.get("space") == space.name]
        for parent in parents:
            record = SearchRecord.of_parent(client, parent, name)
            metric, _ = record.objective
            if metric != space.metric:
                raise BadInput(f"--warm-start {name}: it optimised {metric!r}, this space "
                               f"optimises {space.metric!r}")
            out.searches += 1
            max_epochs = _int(parent.data.params.get("max_epochs"))
            for run in record.trial_runs:
                trial = _frozen(record, run, space, info, max_epochs, optuna)
                if trial == "unfit":
                    out.skipped_unfit += 1
                elif trial is None:
                    out.skipped_empty += 1
                else:
                    out.trials.append(trial)
    return out


def _int(text: Any) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _frozen(record: Any, run: Any, space: Any, info: Any, max_epochs: int | None,
            optuna: Any) -> Any:
    """One trial run as an Optuna trial, ``"unfit"``, or None (nothing to learn from)."""
    from optuna.trial import TrialState

    fitted = replay(space.suggest, info, run.data.params)
    if fitted is None:
        return "unfit"
    params, distributions = fitted
    steps = {int(e): float(v) for e, v in record.epochs(run.info.run_id) if math.isfinite(v)}
    failed = run.info.status == "FAILED"
    if failed:
        state, value = TrialState.FAIL, None
    elif not steps:
        return None
    elif max_epochs is not None and max(steps) >= max_epochs:
        state, value = TrialState.COMPLETE, steps[max(steps)]
    else:
        state, value = TrialState.PRUNED, None
    return optuna.trial.create_trial(
        params=params, distributions=distributions, value=value, state=state,
        intermediate_values=steps,
        user_attrs={"warm_start_run_id": run.info.run_id,
                    "warm_start_experiment": record.name})
