"""One read model of a search: :class:`SearchRecord`, what its books hold, read back.

A search's facts live in MLflow (the parent run: settings as params, summary metrics, tags,
``best_config.json`` and ``best_checkpoint.pt``; one child run per trial with its params and
per-epoch metrics) and, on the machine that ran it, in ``state.json``. Everything that reads a
search after the fact (``compare``, ``report``, ``--export-best``, ``blackout``, the earlier
stages of multi-stage spaces) reads it through this class, so two rules live here once:

- the best value of a trial is the best finite value over its epochs (:func:`best_value`);
- the seed trial is the one the tracker tagged ``scitune.seed=true`` when it started, because
  its flat configuration equalled the seed configuration as text (:func:`same_config`); runs
  from before that tag fall back to the same rule against the registered space's seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any

from common.errors import BadInput, DataError
from tracking.store import RUN_KIND_TAG, resolve_mlflow_uri

PARENT_TAG = "mlflow.parentRunId"
SEED_TAG = "scitune.seed"
BEST_CONFIG = "best_config.json"
BEST_CHECKPOINT = "best_checkpoint.pt"


def same_config(config: Mapping[str, Any], seed: Mapping[str, Any]) -> bool:
    """Whether a flat configuration is the seed configuration (compared as text, over the
    keys of both, as MLflow stores parameters)."""
    return all(str(config.get(k)) == str(seed.get(k)) for k in set(config) | set(seed))


def best_value(values: Iterable[float], mode: str) -> float | None:
    """The best finite value (``max`` or ``min``), None when there is none."""
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if mode == "max" else min(finite)


def registered_seed(space: str | None) -> dict[str, Any] | None:
    """The registered seed configuration of ``space`` (None where it is not registered)."""
    try:
        from search_spaces import get_space

        return dict(get_space(space or "").seed_config)
    except Exception:  # noqa: BLE001 - an unknown space or a plugin that fails to import
        return None


def registered_objective(space: str | None) -> tuple[str | None, str]:
    """The registered space's ``(metric, mode)`` (``(None, "max")`` where unknown)."""
    try:
        from search_spaces import get_space

        found = get_space(space or "")
        return found.metric, found.mode
    except Exception:  # noqa: BLE001 - as registered_seed
        return None, "max"


def all_runs(client: Any, experiment_id: str, filter_string: str = "") -> list[Any]:
    """Every run of an MLflow experiment matching ``filter_string`` (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string,
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def search_parents(client: Any, experiment_id: str) -> list[Any]:
    """The parent runs of the searches in an MLflow experiment, oldest first: runs tagged
    ``scitune.run=search``, or (older searches) runs that are neither a child nor a retrain."""
    parents = all_runs(client, experiment_id, f"tags.`{RUN_KIND_TAG}` = 'search'")
    if not parents:
        parents = [r for r in all_runs(client, experiment_id)
                   if PARENT_TAG not in r.data.tags and RUN_KIND_TAG not in r.data.tags
                   and "space" in r.data.tags]
    return sorted(parents, key=lambda r: r.info.start_time or 0)


def existing_store_uri(uri: str | None) -> str:
    """``--mlflow-uri`` of a command that reads searches (default ``sqlite:///<cwd>/mlflow.db``),
    resolved and checked: a server must answer, a SQLite file must exist (reading creates no
    store). Raises :class:`BadInput` naming the fix."""
    resolved = resolve_mlflow_uri(uri)
    if resolved.startswith("sqlite:///"):
        db = Path(resolved[len("sqlite:///"):])
        if not db.is_file():
            where = "--mlflow-uri" if uri else "default --mlflow-uri"
            raise BadInput(f"{where} {resolved}: no MLflow store there; run this where the "
                           "searches ran or pass --mlflow-uri")
    return resolved


def recorded_store_uri(storage: str, patterns: list[str]) -> str | None:
    """The MLflow store recorded by the searches in ``storage`` whose names match ``patterns``
    (shell-style globs): None where none is recorded there; :class:`BadInput` where they
    recorded different stores."""
    import fnmatch

    from tracking.state import ExperimentState, state_path

    root = state_path(storage, "x").parent.parent
    uris = set()
    for path in sorted(root.glob("*/state.json")) if root.is_dir() else []:
        if any(fnmatch.fnmatchcase(path.parent.name, p) for p in patterns):
            try:
                uri = ExperimentState.load(path).data.get("tracking_uri")
            except ValueError:
                continue
            if uri:
                uris.add(uri)
    if len(uris) > 1:
        raise BadInput(f"--storage {storage}: the searches named were logged to different MLflow "
                       f"stores ({', '.join(sorted(uris))}); pass --mlflow-uri")
    return next(iter(uris), None)


class SearchRecord:
    """One search as its books hold it. Build it with :meth:`load` (by ``--storage`` and
    experiment name, from ``state.json``), :meth:`latest` (the last finished search of an
    MLflow experiment) or :meth:`of_parent` (a parent run found in MLflow)."""

    def __init__(self, client: Any, parent: Any, name: str, state: Any = None, *,
                 tracking_uri: str | None = None, parent_run_id: str | None = None):
        self._client = client
        self._parent = parent
        self.name = name
        self.state = state  # tracking.state.ExperimentState where the search ran here
        self._tracking_uri = tracking_uri
        self._parent_run_id = parent_run_id

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def load(cls, storage: str, name: str, tracking_uri: str | None = None) -> SearchRecord:
        """The search ``name`` recorded in ``storage`` (raises :class:`BadInput`). Reads
        ``state.json`` only: MLflow is reached on first use, so cheap checks come first.
        ``tracking_uri`` overrides the MLflow store the search recorded (``--mlflow-uri``:
        the same server reached by another address, or a copied store)."""
        from common.paths import check_experiment_name
        from tracking.state import ExperimentState, state_path

        check_experiment_name(name)
        path = state_path(storage, name)
        if not path.exists():
            raise BadInput(f"no experiment {name!r} in {storage}; check --experiment and "
                           "--storage")
        try:
            state = ExperimentState.load(path)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        return cls(None, None, name, state,
                   tracking_uri=tracking_uri or state.data.get("tracking_uri") or "",
                   parent_run_id=state.data["parent_run_id"])

    @classmethod
    def latest(cls, experiment: str, space: str, option: str, tracking_uri: str | None = None
               ) -> SearchRecord:
        """The last finished search of ``space`` in MLflow experiment ``experiment``, for a
        search that builds on it (``--data-option {option}=NAME``); raises
        :class:`DataError` naming the fix."""
        import mlflow
        from mlflow.tracking import MlflowClient

        uri = tracking_uri or mlflow.get_tracking_uri()
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise DataError(f"--data-option {option}={experiment}: no such MLflow experiment in "
                            f"{uri}; run a '{space}' search first or drop the option")
        finished = [r for r in search_parents(client, found.experiment_id)
                    if r.info.status == "FINISHED"]
        if not finished:
            raise DataError(f"--data-option {option}={experiment}: the experiment has no "
                            "finished search; let it finish (or --resume it) first")
        parent = max(finished, key=lambda r: r.info.end_time or 0)
        if parent.data.tags.get("space") != space:
            raise DataError(f"--data-option {option}={experiment}: it searched space "
                            f"{parent.data.tags.get('space')!r}, not '{space}'")
        return cls(client, parent, experiment)

    @classmethod
    def of_parent(cls, client: Any, parent: Any, name: str) -> SearchRecord:
        """The search whose parent run is ``parent``."""
        return cls(client, parent, name)

    # -- what the parent run says -----------------------------------------------------------
    @property
    def client(self) -> Any:
        """The MLflow client of the search's tracking store (a server is checked first)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            uri = self._tracking_uri or ""
            database = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
            if database is not None and not Path(database).is_file():
                # MLflow would create an empty store there, and report every run missing
                raise BadInput(f"the MLflow store of {self.name!r}, {uri}, does not exist "
                               "(moved or deleted?); give its new place with --mlflow-uri "
                               "sqlite:////path/to/mlflow.db")
            if uri.startswith(("http://", "https://", "postgresql")):
                from tracking.store import resolve_mlflow_uri

                # a one-line error now beats MLflow's retries (or a missing password's trace)
                uri = resolve_mlflow_uri(uri)
            self._client = MlflowClient(uri)
        return self._client

    @property
    def parent(self) -> Any:
        """The search's MLflow parent run (raises :class:`BadInput` when it is missing)."""
        if self._parent is None:
            try:
                self._parent = self.client.get_run(self._parent_run_id)
            except BadInput:
                raise
            except Exception as exc:  # noqa: BLE001 - MLflow raises several types
                raise BadInput(f"MLflow parent run {self._parent_run_id} of {self.name!r} is not "
                               f"in {self.tracking_uri} ({type(exc).__name__}); check the "
                               "tracking server or database") from None
        return self._parent

    @property
    def parent_run_id(self) -> str:
        return self._parent_run_id or self.parent.info.run_id

    @property
    def tracking_uri(self) -> str:
        return str(self._tracking_uri if self._client is None else self._client.tracking_uri)

    @property
    def space(self) -> str | None:
        return self.parent.data.tags.get("space")

    @property
    def settings(self) -> dict[str, Any]:
        """The search's settings: from ``state.json`` where it ran here, else the parent run's
        params (as text)."""
        if self.state is not None:
            return dict(self.state.data.get("settings") or {})
        return dict(self.parent.data.params)

    @cached_property
    def objective(self) -> tuple[str | None, str]:
        """``(metric, mode)``: the parent run's tags, else the registered space's."""
        tags = self.parent.data.tags
        metric, mode = tags.get("metric"), tags.get("mode")
        if metric is None or mode is None:  # older searches
            registered = registered_objective(self.space)
            metric, mode = metric or registered[0], mode or registered[1]
        return metric, mode

    @property
    def summarised(self) -> bool:
        """Whether the search finished its summary (the parent run holds its figures)."""
        metric = self.objective[0]
        metrics = self.parent.data.metrics
        return "trials" in metrics and (metric is None or f"best_{metric}" in metrics)

    # -- the trials -------------------------------------------------------------------------
    @cached_property
    def trial_runs(self) -> list[Any]:
        """The trial runs, in the order they started (ties: by run id)."""
        runs = all_runs(self.client, self.parent.info.experiment_id,
                        f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'")
        return sorted((r for r in runs if r.data.tags.get(RUN_KIND_TAG, "trial") == "trial"),
                      key=lambda r: (r.info.start_time or 0, r.info.run_id))

    @cached_property
    def _histories(self) -> dict[str, dict[str, list[tuple[int, float]]]]:
        """run id → {metric: [(epoch, value), ...]} for the objective and ``epoch_seconds``."""
        metric = self.objective[0]
        wanted = [k for k in (metric, "epoch_seconds") if k]

        def histories(run: Any) -> dict[str, list[tuple[int, float]]]:
            return {k: sorted(((m.step, m.value) for m in
                               self.client.get_metric_history(run.info.run_id, k)),
                              key=lambda m: m[0]) for k in wanted}

        runs = self.trial_runs
        with ThreadPoolExecutor(max_workers=8) as pool:
            logged = list(pool.map(histories, runs))
        return {run.info.run_id: history for run, history in zip(runs, logged, strict=True)}

    def history(self, run_id: str, metric: str | None = None) -> list[float]:
        """Per-epoch values of ``metric`` (default: the objective) of one trial run, in epoch
        order; only the objective and ``epoch_seconds`` are read."""
        return [v for _, v in self.epochs(run_id, metric)]

    def epochs(self, run_id: str, metric: str | None = None) -> list[tuple[int, float]]:
        """``[(epoch, value), ...]`` of ``metric`` (default: the objective) of one trial run."""
        return list(self._histories.get(run_id, {}).get(metric or self.objective[0] or "", []))

    def _configs(self) -> dict[str, dict[str, Any]]:
        """run id → the configuration with its types, where the search ran here (the tracker
        records it in ``state.json``); MLflow holds parameters as text only."""
        if self.state is None:
            return {}
        return {r["run_id"]: dict(r["config"]) for r in self.state.trials.values()
                if r.get("run_id") and isinstance(r.get("config"), dict)}

    @cached_property
    def trials(self) -> Any:
        """One row per trial run, in start order: ``trial_id``, ``run_id``, ``status``,
        ``best`` (best value of the objective over its epochs), ``epochs`` (epochs with a
        finite objective), ``compute_seconds``, ``is_seed``, ``failed``, ``failure_reason``,
        then its parameters as ``config/<name>`` (with their types where the search ran
        here, else as the text MLflow holds)."""
        import pandas as pd

        metric, mode = self.objective
        seed = self.seed_run()
        typed = self._configs()
        rows = []
        for run in self.trial_runs:
            run_id = run.info.run_id
            values = self.history(run_id) if metric else []
            config = typed.get(run_id, run.data.params)
            rows.append({
                "trial_id": run.data.tags.get("trial_id"), "run_id": run_id,
                "status": run.info.status, "best": best_value(values, mode),
                "epochs": sum(1 for v in values if math.isfinite(v)),
                "compute_seconds": sum(v for v in self.history(run_id, "epoch_seconds")
                                       if math.isfinite(v)),
                "is_seed": seed is not None and run_id == seed.info.run_id,
                "failed": run.info.status == "FAILED",
                "failure_reason": run.data.tags.get("failure_reason"),
                **{f"config/{k}": v for k, v in config.items()},
            })
        columns = ["trial_id", "run_id", "status", "best", "epochs", "compute_seconds",
                   "is_seed", "failed", "failure_reason"]
        return pd.DataFrame.from_records(rows, columns=None if rows else columns)

    def ranked(self) -> Any:
        """:attr:`trials`, best first (equal values: first started first; trials without a
        value last)."""
        trials = self.trials
        if not len(trials):
            return trials
        return trials.sort_values("best", ascending=self.objective[1] != "max",
                                  na_position="last", kind="stable")

    def seed_run(self) -> Any | None:
        """The trial run of the seed configuration (see the module doc); None for an older
        search with a ``--space-file`` (its projected seed is not recorded) or a space not
        registered here."""
        runs = self.trial_runs
        tagged = [r for r in runs if r.data.tags.get(SEED_TAG) == "true"]
        if tagged:
            return tagged[0]
        if self.parent.data.params.get("space_file", "None") not in ("None", ""):
            return None
        seed = registered_seed(self.space)
        return next((r for r in runs if same_config(r.data.params, seed)), None) \
            if seed else None

    def best(self) -> Any | None:
        """The row of the best trial (first started among equals), None before any value."""
        ranked = self.ranked()
        return ranked.iloc[0] if len(ranked) and ranked["best"].notna().iloc[0] else None

    def seed(self) -> Any | None:
        """The row of the seed trial, None where there is none."""
        trials = self.trials
        rows = trials[trials["is_seed"]] if len(trials) else trials
        return rows.iloc[0] if len(rows) else None

    # -- what the search left on its parent run ---------------------------------------------
    def best_record(self) -> dict[str, Any]:
        """``best_config.json``: ``space``, ``trial``, the objective's value and ``config``
        (raises :class:`BadInput` before the search has finished)."""
        try:
            local = self.client.download_artifacts(self.parent_run_id, BEST_CONFIG)
            return json.loads(Path(local).read_text())
        except BadInput:
            raise
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise BadInput(f"experiment {self.name!r} has no best configuration yet; let the "
                           "search finish (or --resume it) first") from None

    def best_config(self) -> dict[str, Any]:
        """The best configuration the search chose (its best checkpoint's)."""
        return dict(self.best_record()["config"])

    def best_checkpoint(self) -> Path:
        """The best checkpoint file, downloaded (raises :class:`BadInput` when absent)."""
        try:
            return Path(self.client.download_artifacts(self.parent_run_id, BEST_CHECKPOINT))
        except BadInput:
            raise
        except Exception:  # noqa: BLE001 - as best_record
            raise BadInput(f"experiment {self.name!r} has no best checkpoint yet; let the "
                           "search finish (or --resume it) first") from None

    def best_model_state(self) -> dict[str, Any]:
        """The model state dict of the best checkpoint (tensors only)."""
        import torch

        return torch.load(self.best_checkpoint(), map_location="cpu", weights_only=True)["model"]
