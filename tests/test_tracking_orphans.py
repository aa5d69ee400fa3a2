"""Runs of trials Ray lost (started after its last experiment checkpoint, then the driver was
killed) are deleted at the end of the resumed search, so each trial keeps exactly one run:
also a run created in MLflow just before the kill but not yet recorded in the state."""

from __future__ import annotations

import json

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from search.summary import drop_orphans
from tracking.state import ExperimentState
from tracking.store import ensure_sqlite_store
from tracking.tracker import MlflowTracker


def test_runs_of_trials_ray_lost_are_deleted_even_when_the_state_never_saw_them(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_sqlite_store(uri)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("orphans")
    parent = client.create_run(experiment_id)
    state_file = tmp_path / "state.json"
    ExperimentState(state_file, {"parent_run_id": parent.info.run_id,
                                 "mlflow_experiment_id": experiment_id, "trials": {}}).save()
    tracker = MlflowTracker(uri, str(state_file), max_epochs=2, run_tags={}, metric="val_top1")
    tracker.setup()
    for trial_id in ("kept", "lost"):
        tracker._started((trial_id, trial_id, {"lr": 0.001}))
    tracker._result(("kept", "kept", {"lr": 0.001}), {"epoch": 2, "val_top1": 0.5})
    tracker._completed(("kept", "kept", {"lr": 0.001}))
    runs = {tid: rec["run_id"] for tid, rec in tracker.state.trials.items()}
    # the driver died between MLflow's create_run and the state's save
    ghost = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent.info.run_id,
                                                   "trial_id": "ghost", "scitune.run": "trial"})
    unrelated = client.create_run(experiment_id, tags={"trial_id": "other-search"})

    state = ExperimentState.load(state_file)
    drop_orphans(client, state, known={"kept"})

    active = {r.info.run_id for r in client.search_runs(
        [experiment_id], run_view_type=ViewType.ACTIVE_ONLY)}
    assert runs["kept"] in active and unrelated.info.run_id in active
    assert runs["lost"] not in active and ghost.info.run_id not in active
    assert client.get_run(ghost.info.run_id).info.lifecycle_stage == "deleted"  # recoverable
    saved = json.loads(state_file.read_text())["trials"]
    assert saved["kept"]["status"] == "FINISHED"
    assert saved["lost"]["status"] == saved["ghost"]["status"] == "ORPHANED"
    drop_orphans(client, ExperimentState.load(state_file), known={"kept"})  # idempotent
