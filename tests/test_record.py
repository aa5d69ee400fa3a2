"""The read model of a search (tracking.record.SearchRecord) on runs written to a real MLflow
SQLite store the way the tracker and the summary write them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from common.errors import BadInput, DataError
from tracking.record import SearchRecord, best_value, same_config


def _run(client, experiment_id, tags, params, history, status="FINISHED") -> str:
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, v, 0, step) for k, values in history.items()
                              for step, v in enumerate(values, 1)])
    client.set_terminated(run_id, status=status)
    return run_id


@pytest.fixture
def store(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("stage1", artifact_location=(tmp_path / "art").as_uri())
    tags = {"space": "ae", "metric": "val_recon_loss", "mode": "min"}
    parent = _run(client, exp, {**tags, "scitune.run": "search"}, {"trials": 3}, {})
    child = {**tags, "scitune.run": "trial", "mlflow.parentRunId": parent}
    seed = _run(client, exp, {**child, "trial_id": "a", "scitune.seed": "true"}, {"lr": 0.001},
                {"val_recon_loss": [0.5, 0.4], "epoch_seconds": [1.0, 1.0]})
    best = _run(client, exp, {**child, "trial_id": "b"}, {"lr": 0.01},
                {"val_recon_loss": [0.3, float("nan"), 0.35], "epoch_seconds": [2.0, 2.0, 2.0]})
    _run(client, exp, {**child, "trial_id": "c", "failure_reason": "diverged: nan"}, {"lr": 1.0},
         {"val_recon_loss": [float("nan")]}, status="FAILED")
    return uri, client, parent, seed, best


def test_trials_best_and_seed(store):
    uri, client, parent, seed, best = store
    record = SearchRecord.of_parent(client, client.get_run(parent), "stage1")
    assert record.objective == ("val_recon_loss", "min") and record.summarised is False
    trials = record.trials
    assert list(trials["trial_id"]) == ["a", "b", "c"]
    assert list(trials["epochs"]) == [2, 2, 0]  # finite values only
    assert trials["compute_seconds"].sum() == pytest.approx(8.0)
    assert math.isnan(trials.loc[2, "best"]) and trials.loc[2, "failure_reason"] == "diverged: nan"
    assert record.best()["run_id"] == best and record.best()["best"] == pytest.approx(0.3)
    assert record.seed()["run_id"] == seed and trials["is_seed"].sum() == 1
    assert trials.loc[1, "config/lr"] == "0.01"


def test_latest_finished_search_and_its_best_checkpoint(store, tmp_path):
    uri, client, parent, _, _ = store
    with pytest.raises(BadInput, match="no best configuration yet"):
        SearchRecord.latest("stage1", "ae", "ae_experiment", uri).best_config()
    (tmp_path / "best_config.json").write_text(json.dumps({"space": "ae", "config": {"lr": 0.01}}))
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 1}, tmp_path / "best_checkpoint.pt")
    client.log_artifact(parent, str(tmp_path / "best_config.json"))
    client.log_artifact(parent, str(tmp_path / "best_checkpoint.pt"))
    record = SearchRecord.latest("stage1", "ae", "ae_experiment", uri)
    assert record.parent_run_id == parent and record.best_config() == {"lr": 0.01}
    assert torch.equal(record.best_model_state()["w"], torch.ones(2))
    with pytest.raises(DataError, match="searched space 'ae', not 'cnn'"):
        SearchRecord.latest("stage1", "cnn", "cnn_experiment", uri)
    with pytest.raises(DataError, match="no such MLflow experiment"):
        SearchRecord.latest("nope", "ae", "ae_experiment", uri)


def test_the_two_rules():
    assert same_config({"lr": 0.001, "depth": 3}, {"lr": "0.001", "depth": "3"})
    assert not same_config({"lr": 0.001}, {"lr": 0.001, "depth": 3})
    assert best_value([0.2, float("nan"), 0.5], "max") == 0.5
    assert best_value([0.2, float("inf"), 0.5], "min") == 0.2
    assert best_value([float("nan")], "max") is None
