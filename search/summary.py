"""End of a search: the summary table, the seed comparison and the parent run's artifacts."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from search.settings import SearchResult, SearchSettings
from search_spaces import Space
from tracking.record import BEST_CHECKPOINT, BEST_CONFIG, best_value, same_config
from tracking.state import ExperimentState
from trainables.checkpoint import CHECKPOINT_FILE, FAILURE_KEY, flatten


def _history(result: Any, metric: str) -> list[float]:
    df = result.metrics_dataframe
    if df is None or metric not in df:
        value = (result.metrics or {}).get(metric)
        return [value] if isinstance(value, int | float) else []
    return [float(v) for v in df[metric].tolist()]


def _total(result: Any, metric: str) -> float:
    """Sum of a per-epoch metric over a trial's history (0 when it never reported it)."""
    df = result.metrics_dataframe
    if df is None or metric not in df:
        return 0.0
    return float(df[metric].dropna().sum())


def compact(config: dict[str, Any], seed: dict[str, Any], width: int = 150) -> str:
    """``k=v`` for the parameters that differ from the seed configuration, on one line."""
    parts = []
    for key, value in config.items():
        if str(seed.get(key)) == str(value):
            continue
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    text = "vs seed: " + (" ".join(parts) if parts else "same")
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def drop_orphans(client: Any, state: ExperimentState, known: set[str],
                 experiment_dir: Path | None = None) -> None:
    """Delete the runs of trials Ray no longer knows.

    A driver killed between starting a trial and Ray's next experiment checkpoint leaves a
    started trial that the restored experiment does not contain (its searcher state predates
    it, so the searcher proposes a replacement). Its MLflow run would be a second run for one
    suggestion; it is deleted (MLflow keeps deleted runs recoverable) and marked orphaned.
    This includes a run the tracker created just before the kill but had not yet recorded in
    the state: every trial run under the parent run is checked by its ``trial_id`` tag."""
    from mlflow.entities import ViewType

    changed = False
    parent = state.data.get("parent_run_id")
    experiment_id = state.data.get("mlflow_experiment_id")
    if parent and experiment_id:
        for run in client.search_runs(
                [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                run_view_type=ViewType.ACTIVE_ONLY, max_results=50_000):
            trial_id = run.data.tags.get("trial_id")
            if trial_id and trial_id not in known and trial_id not in state.trials:
                state.trials[trial_id] = {"run_id": run.info.run_id, "last_step": 0,
                                          "status": "RUNNING"}
    for trial_id, record in state.trials.items():
        if trial_id not in known and record.get("status") not in ("ORPHANED",):
            client.delete_run(record["run_id"])
            record["status"] = "ORPHANED"
            changed = True
            if experiment_dir is not None:  # the forgotten trial's folder, named by us
                shutil.rmtree(experiment_dir / f"trial_{trial_id}", ignore_errors=True)
    if changed:
        state.save()


def best_checkpoint_file(result: Any, metric: str, mode: str) -> Path | None:
    """The checkpoint file of a trial's best epoch: Tune's checkpoint for single-process
    trials, the Ray Train checkpoint (``checkpoint_path``) for multi-worker trials."""
    if result.best_checkpoints:
        return Path(result.get_best_checkpoint(metric, mode).path) / CHECKPOINT_FILE
    if result.checkpoint is not None:
        return Path(result.checkpoint.path) / CHECKPOINT_FILE
    df = result.metrics_dataframe
    if df is not None and "checkpoint_path" in df and metric in df:
        rows = df.dropna(subset=["checkpoint_path", metric])
        if len(rows):
            best = rows[metric].idxmax() if mode == "max" else rows[metric].idxmin()
            return Path(str(rows.loc[best, "checkpoint_path"])) / CHECKPOINT_FILE
    return None


def log_best_model(state: ExperimentState, space: Space, config: dict[str, Any],
                   checkpoint_file: Path | None) -> str | None:
    """Log the best checkpoint's model with ``mlflow.pytorch`` on the parent run; returns its
    URI (None, with a warning, if it cannot be: the search's results stand regardless)."""
    if checkpoint_file is None or not checkpoint_file.exists():
        return None
    try:
        import mlflow

        from datasets import get_dataset
        from tracking.model_export import load_checkpoint_model, log_model

        settings = state.data["settings"]
        data = get_dataset(space.dataset).load(settings["data_path"], int(settings["seed"]),
                                               settings.get("data_option") or {})
        model = load_checkpoint_model(space, config, data, checkpoint_file)
        mlflow.set_tracking_uri(state.data["tracking_uri"])
        return log_model(state.data["parent_run_id"], model, data, config)
    except Exception as exc:  # noqa: BLE001 - a missing export must not lose the search
        print(f"warning: the best model was not logged to MLflow ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0][:200] if str(exc) else ''})")
        return None


def trials_frame(rows: list[dict[str, Any]]) -> Any:
    """The trials of a search as a DataFrame, best first (see :class:`SearchResult`)."""
    import pandas as pd

    records = [{"trial": r["trial"], "trial_id": r["trial_id"], "best": r["best"],
                "epochs": r["epochs"], "failed": r["failed"], "is_seed": r["is_seed"],
                "run_id": r["run_id"], **{f"config/{k}": v for k, v in r["config"].items()}}
               for r in rows]
    columns = ["trial", "trial_id", "best", "epochs", "failed", "is_seed", "run_id"]
    return pd.DataFrame.from_records(records, columns=None if records else columns)


def finish(args: SearchSettings, space: Space, state: ExperimentState, results: Any
           ) -> SearchResult:
    """Print the summary, log it to the parent run, close the parent run; return the result
    (its ``exit_code``: 0 done, 1 no trial reported the objective, 130 interrupted)."""
    from mlflow.tracking import MlflowClient

    state = ExperimentState.load(state.path)  # the tracker's latest record
    metric, sign = space.metric, (1.0 if space.mode == "max" else -1.0)
    seed_config = {k: v for k, v in space.seed_config.items()}
    rows = []
    for result in results:
        config = flatten(result.config or {})
        history = _history(result, metric)
        finite = [v for v in history if math.isfinite(v)]
        best = best_value(history, space.mode)
        trial_id = (result.metrics or {}).get("trial_id") or \
            Path(result.path).name.removeprefix("trial_")
        record = state.trials.get(trial_id, {})
        rows.append({
            "trial": Path(result.path).name, "trial_id": trial_id, "result": result,
            "config": config, "history": history, "best": best,
            "epochs": len(finite),
            "failed": result.error is not None or FAILURE_KEY in (result.metrics or {}),
            "is_seed": same_config(config, seed_config),
            "run_id": record.get("run_id"),
        })
    client = MlflowClient(state.data["tracking_uri"])
    drop_orphans(client, state, {r["trial_id"] for r in rows},
                 Path(results.experiment_path) if getattr(results, "experiment_path", None) else None)
    scored = sorted((r for r in rows if r["best"] is not None), key=lambda r: -sign * r["best"])
    seed_row = next((r for r in rows if r["is_seed"]), None)
    failed = [r for r in rows if r["failed"]]
    ranked = scored + [r for r in rows if r["best"] is None]
    parent = state.data["parent_run_id"]

    def result(code: int, **best: Any) -> SearchResult:
        return SearchResult(experiment=args.experiment, exit_code=code, metric=metric,
                            mode=space.mode, tracking_uri=state.data["tracking_uri"],
                            parent_run_id=parent, storage=args.storage,
                            trials=trials_frame(ranked), **best)

    trial_epochs = sum(r["epochs"] for r in rows)
    compute_seconds = sum(_total(r["result"], "epoch_seconds") for r in rows)

    print()
    print(f"=== {args.experiment}: {len(rows)} trials, {len(failed)} failed, "
          f"{trial_epochs} trial-epochs; objective {metric} ({space.mode}) ===")
    print(f"{'rank':>4}  {'trial':<40} {'best ' + metric:>14} {'epochs':>6}  note")
    for rank, row in enumerate(scored[:10], 1):
        note = "seed configuration" if row["is_seed"] else ""
        print(f"{rank:>4}  {row['trial'][:40]:<40} {_fmt(row['best']):>14} {row['epochs']:>6}  {note}")
        if rank <= 5 and not row["is_seed"]:
            print(f"      {compact(row['config'], seed_config)}")
    if seed_row and seed_row not in scored[:10]:
        print(f"{'seed':>4}  {seed_row['trial'][:40]:<40} {_fmt(seed_row['best']):>14} "
              f"{seed_row['epochs']:>6}  seed configuration")
    for row in failed:
        reason = state.trials.get(row["trial_id"], {}).get(FAILURE_KEY) or \
            (row["result"].metrics or {}).get(FAILURE_KEY) or str(row["result"].error)
        print(f"  failed: {row['trial']}: {str(reason).splitlines()[0][:160]}")

    open_trials = [r for r in state.trials.values() if r.get("status") == "RUNNING"]
    if open_trials or len(rows) < int(state.data["settings"]["trials"]):
        for record in open_trials:  # interrupted (Ctrl-C): no run is left RUNNING
            client.set_terminated(record["run_id"], status="KILLED")
            record["status"] = "KILLED"
        state.save()
        client.set_terminated(parent, status="KILLED")
        print(f"search interrupted after {len(rows)} of {state.data['settings']['trials']} "
              f"trials; continue it with: python launch.py --resume --experiment {args.experiment}"
              f" --storage {args.storage}")
        return result(130)
    summary: dict[str, Any] = {"trials": len(rows), "failed": len(failed),
                               "trial_epochs": trial_epochs, "compute_seconds": compute_seconds}
    if not scored:
        print("no trial reported the objective; see the failures above")
        client.set_terminated(parent, status="FAILED")
        return result(1)

    best = scored[0]
    summary[f"best_{metric}"] = best["best"]
    if seed_row and seed_row["history"]:
        e = seed_row["epochs"]
        seed_value = seed_row["history"][-1]
        best_at_e = best["history"][e - 1] if len(best["history"]) >= e else None
        summary[f"seed_{metric}"] = seed_value
        if best_at_e is not None:
            summary[f"best_{metric}_at_seed_epochs"] = best_at_e
        print(f"seed configuration: {metric} {_fmt(seed_value)} after {e} epochs; "
              f"best trial: {_fmt(best_at_e)} after {e} epochs, {_fmt(best['best'])} at its best "
              f"({best['epochs']} epochs)")
    print("best configuration:")
    print(json.dumps(best["config"], indent=1, default=str))

    checkpoint_file = best_checkpoint_file(best["result"], metric, space.mode)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / BEST_CONFIG).write_text(json.dumps(
            {"space": space.name, "trial": best["trial"], metric: best["best"],
             "config": best["config"]}, indent=1, default=str))
        client.log_artifact(parent, str(Path(tmp) / BEST_CONFIG))
        if checkpoint_file and checkpoint_file.exists():
            shutil.copy(checkpoint_file, Path(tmp) / BEST_CHECKPOINT)
            client.log_artifact(parent, str(Path(tmp) / BEST_CHECKPOINT))
    model_uri = log_best_model(state, space, best["config"], checkpoint_file)
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()
                                      if isinstance(v, int | float)])
    client.set_tag(parent, "best_trial", best["trial"])
    if model_uri:
        client.set_tag(parent, "model_uri", model_uri)
    if best["run_id"]:
        client.set_tag(parent, "best_run_id", best["run_id"])
    client.set_terminated(parent, status="FINISHED")

    print(f"best checkpoint: {checkpoint_file}")
    if model_uri:
        print(f"best model:      mlflow.pytorch.load_model('{model_uri}')")
    uri = state.data["tracking_uri"]
    print(f"MLflow UI:       mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
          "  → http://127.0.0.1:5000")
    print("Ray dashboard:   shown at http://127.0.0.1:8265 while a search runs "
          "(`ray start --head` keeps one up)")
    return result(0, best_config=best["config"], best_value=best["best"],
                  best_checkpoint=checkpoint_file if checkpoint_file and checkpoint_file.exists()
                  else None, best_run_id=best["run_id"], model_uri=model_uri,
                  seed_value=summary.get(f"seed_{metric}"))
