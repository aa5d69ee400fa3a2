"""End of a search: the summary table, the seed comparison and the parent run's artifacts."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from common.paths import is_uri
from search.settings import SearchResult, SearchSettings
from search_spaces import Space
from tracking.record import BEST_CHECKPOINT, BEST_CONFIG, SearchRecord
from tracking.state import ExperimentState
from tracking.store import shown_uri
from trainables.checkpoint import CHECKPOINT_FILE, FAILURE_KEY


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


def best_checkpoint(result: Any, metric: str, mode: str) -> Any:
    """The checkpoint (a ``ray.train.Checkpoint`` on the search's storage, local or cloud) of
    a trial's best epoch: Tune's checkpoint for single-process trials, the Ray Train
    checkpoint (``checkpoint_path``) for multi-worker trials; None if it has none."""
    if result.best_checkpoints:
        return result.get_best_checkpoint(metric, mode)
    if result.checkpoint is not None:
        return result.checkpoint
    df = result.metrics_dataframe
    if df is not None and "checkpoint_path" in df and metric in df:
        import pyarrow.fs
        from ray.train import Checkpoint

        rows = df.dropna(subset=["checkpoint_path", metric])
        # best first, the earlier epoch first among equals; one Ray has since removed (it
        # keeps two per trial) is passed over for the next best that is still there
        ranked = rows.sort_values(metric, ascending=mode != "max", kind="stable")
        for path in ranked["checkpoint_path"].astype(str):
            checkpoint = Checkpoint(path, filesystem=result.filesystem)
            try:
                info = checkpoint.filesystem.get_file_info(checkpoint.path)
            except Exception:  # noqa: BLE001 - storage unreachable: let the reader say so
                return checkpoint
            if info.type != pyarrow.fs.FileType.NotFound:
                return checkpoint
    return None


def checkpoint_location(checkpoint: Any, storage: str) -> Path | str:
    """Where a user finds ``checkpoint``'s file: a local path, or a URI on cloud storage (Ray
    gives paths on cloud storage without their scheme)."""
    file = f"{checkpoint.path.rstrip('/')}/{CHECKPOINT_FILE}"
    if is_uri(storage):
        return f"{storage.split('://', 1)[0]}://{file.lstrip('/')}"
    return Path(file)


def fetch_checkpoint_file(checkpoint: Any, destination: Path) -> Path | None:
    """Copy ``checkpoint``'s file from the search's storage to ``destination``; None if it
    cannot be read (removed, or the storage is unreachable: a warning says which)."""
    try:
        with checkpoint.filesystem.open_input_stream(
                f"{checkpoint.path.rstrip('/')}/{CHECKPOINT_FILE}") as source, \
                open(destination, "wb") as target:
            shutil.copyfileobj(source, target)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
        print(f"warning: the best checkpoint was not read from {checkpoint.path} "
              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})")
        destination.unlink(missing_ok=True)
        return None
    return destination


def log_best_model(state: ExperimentState, space: Space, config: dict[str, Any],
                   checkpoint_file: Path | None) -> str | None:
    """Log the best checkpoint's model with ``mlflow.pytorch`` on the parent run; returns its
    URI (None, with a warning, if it cannot be: the search's results stand regardless)."""
    if checkpoint_file is None or not checkpoint_file.exists():
        return None
    try:
        from datasets import get_dataset
        from tracking.model_export import load_checkpoint_model, log_model

        settings = state.data["settings"]
        data = get_dataset(space.dataset).load(settings["data_path"], int(settings["seed"]),
                                               settings.get("data_option") or {})
        model = load_checkpoint_model(space, config, data, checkpoint_file)
        return log_model(state.data["tracking_uri"], state.data["parent_run_id"], model, data,
                         config)
    except Exception as exc:  # noqa: BLE001 - a missing export must not lose the search
        print(f"warning: the best model was not logged to MLflow ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0][:200] if str(exc) else ''})")
        return None


def _trial_id(result: Any) -> str:
    return (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_")


def finish(args: SearchSettings, space: Space, state: ExperimentState, results: Any
           ) -> SearchResult:
    """Print the summary, log it to the parent run, close the parent run; return the result
    (its ``exit_code``: 0 done, 1 no trial reported the objective, 130 interrupted).

    The trials are read back through :class:`tracking.record.SearchRecord`, as ``report``
    and ``compare`` read them; Ray's results give only what MLflow does not hold: each
    trial's folder name, its checkpoints, and how many trials Ray ran."""
    from mlflow.tracking import MlflowClient

    state = ExperimentState.load(state.path)  # the tracker's latest record
    metric = space.metric
    seed_config = dict(space.seed_config)
    uri, parent = state.data["tracking_uri"], state.data["parent_run_id"]
    client = MlflowClient(uri)
    by_trial = {_trial_id(r): r for r in results}
    local_results = getattr(results, "experiment_path", None) and not is_uri(args.storage)
    drop_orphans(client, state, set(by_trial),
                 Path(results.experiment_path) if local_results else None)
    search = SearchRecord(client, None, args.experiment, state, tracking_uri=uri,
                          parent_run_id=parent)
    ranked = search.ranked().copy()
    ranked.insert(0, "trial", [Path(by_trial[t].path).name if t in by_trial else t
                               for t in ranked["trial_id"]])
    rows = ranked.to_dict("records")
    for row in rows:
        row["config"] = {k.removeprefix("config/"): v for k, v in row.items()
                         if k.startswith("config/") and v == v}  # NaN: not sampled
        row["history"] = search.history(row["run_id"])
    scored = [r for r in rows if r["best"] is not None and math.isfinite(r["best"])]
    seed_row = next((r for r in rows if r["is_seed"]), None)
    failed = [r for r in rows if r["failed"]]

    def result(code: int, **best: Any) -> SearchResult:
        return SearchResult(experiment=args.experiment, exit_code=code, metric=metric,
                            mode=space.mode, tracking_uri=uri, parent_run_id=parent,
                            storage=args.storage, trials=ranked.reset_index(drop=True), **best)

    trial_epochs = int(sum(r["epochs"] for r in rows))
    compute_seconds = float(sum(r["compute_seconds"] for r in rows))

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
        ray_result = by_trial.get(row["trial_id"])
        reason = (row["failure_reason"] if isinstance(row["failure_reason"], str) else None) or \
            state.trials.get(row["trial_id"], {}).get(FAILURE_KEY) or \
            (ray_result and str(ray_result.error))
        print(f"  failed: {row['trial']}: {str(reason).splitlines()[0][:160]}")

    open_trials = [r for r in state.trials.values() if r.get("status") == "RUNNING"]
    if open_trials or len(by_trial) < int(state.data["settings"]["trials"]):
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

    best_result = by_trial.get(best["trial_id"])
    checkpoint = best_checkpoint(best_result, metric, space.mode) \
        if best_result is not None else None
    location = checkpoint_location(checkpoint, args.storage) if checkpoint is not None else None
    model_uri, fetched = None, None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / BEST_CONFIG).write_text(json.dumps(
            {"space": space.name, "trial": best["trial"], metric: best["best"],
             "config": best["config"]}, indent=1, default=str))
        client.log_artifact(parent, str(Path(tmp) / BEST_CONFIG))
        if checkpoint is not None:  # read through the storage's file system (local or cloud)
            fetched = fetch_checkpoint_file(checkpoint, Path(tmp) / BEST_CHECKPOINT)
        if fetched is not None:
            client.log_artifact(parent, str(fetched))
            model_uri = log_best_model(state, space, best["config"], fetched)
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

    print(f"best checkpoint: {location if fetched is not None else None}")
    if model_uri:
        print(f"best model:      mlflow.pytorch.load_model('{model_uri}')")
    uri = state.data["tracking_uri"]
    if uri.startswith(("http://", "https://")):  # the server is the UI
        print(f"MLflow UI:       {uri.rstrip('/')}/#/experiments/"
              f"{state.data.get('mlflow_experiment_id', '')}")
    else:
        print(f"MLflow UI:       mlflow ui --backend-store-uri {shown_uri(uri)} --host 127.0.0.1 "
              "--port 5000  → http://127.0.0.1:5000")
    print("Ray dashboard:   shown at http://127.0.0.1:8265 while a search runs "
          "(`ray start --head` keeps one up)")
    return result(0, best_config=best["config"], best_value=best["best"],
                  best_checkpoint=location if fetched is not None else None,
                  best_run_id=best["run_id"], model_uri=model_uri,
                  seed_value=summary.get(f"seed_{metric}"))
