"""Runs of trials Ray lost (started after its last experiment checkpoint, then the driver was
killed) are closed at the end of the resumed search, so each trial keeps exactly one run."""

from __future__ import annotations

import json
from types import SimpleNamespace

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from experiment.tracking import ExperimentState, MlflowTracker, ensure_sqlite_store


def test_runs_of_trials_ray_lost_are_closed_and_leave_the_trial_map(tmp_path):
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
    config = {"lr": 0.001}
    for trial_id in ("kept", "lost_with_epochs", "lost_empty"):
        tracker._started((trial_id, trial_id, config))
    tracker._result(("kept", "kept", config), {"epoch": 2, "val_top1": 0.5})
    tracker._completed(("kept", "kept", config))
    tracker._result(("lost_with_epochs", "lost_with_epochs", config),
                    {"epoch": 1, "val_top1": 0.3})
    runs = {tid: rec["run_id"] for tid, rec in tracker.state.trials.items()}

    tracker.on_experiment_end(trials=[SimpleNamespace(trial_id="kept")])

    state = json.loads(state_file.read_text())
    assert set(state["trials"]) == {"kept"}
    assert set(state["orphaned_trials"]) == {"lost_with_epochs", "lost_empty"}
    active = {r.info.run_id: r for r in client.search_runs([experiment_id],
                                                          run_view_type=ViewType.ACTIVE_ONLY)}
    assert runs["lost_empty"] not in active  # soft-deleted: it logged nothing
    assert client.get_run(runs["lost_empty"]).info.lifecycle_stage == "deleted"
    kept, lost = active[runs["kept"]], active[runs["lost_with_epochs"]]
    assert kept.info.status == "FINISHED" and "scitune.orphaned" not in kept.data.tags
    assert lost.info.status == "KILLED" and lost.data.tags["scitune.orphaned"] == "true"
    assert lost.data.metrics["val_top1"] == 0.3  # its epochs are kept


def test_a_search_whose_trials_ray_all_knows_loses_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_sqlite_store(uri)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("whole")
    parent = client.create_run(experiment_id)
    state_file = tmp_path / "state.json"
    ExperimentState(state_file, {"parent_run_id": parent.info.run_id,
                                 "mlflow_experiment_id": experiment_id, "trials": {}}).save()
    tracker = MlflowTracker(uri, str(state_file), max_epochs=2, run_tags={}, metric="val_top1")
    tracker.setup()
    tracker._started(("t1", "t1", {}))
    tracker.on_experiment_end(trials=[SimpleNamespace(trial_id="t1")])
    state = json.loads(state_file.read_text())
    assert set(state["trials"]) == {"t1"} and "orphaned_trials" not in state
