"""Scale-out: a two-node Ray cluster on one host, and multi-worker (DDP) trials on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, kill_tree, run_cli
from tracking.state import state_path


def children(db: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return client, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


@pytest.fixture
def two_node_cluster():
    """Head + one worker node on 127.0.0.1, each with 1 CPU; stopped by pid afterwards."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.mark.slow  # ~85 s with the cluster's start; keeps the default suite near ~10 min
def test_search_on_a_two_node_cluster_uses_both_nodes(two_node_cluster, tmp_path):
    address = two_node_cluster.address
    refused = run_cli("--address", address, "--trials", "1", "--experiment", "x",
                      "--mlflow-uri", f"sqlite:///{tmp_path / 'refused.db'}", cwd=tmp_path)
    assert refused.returncode == 2 and "pass --storage" in refused.stderr

    db = tmp_path / "mlflow.db"
    storage = tmp_path / "shared"
    result = run_cli("--address", address, "--storage", str(storage), "--trials", "4",
                     "--max-epochs", "2", "--samples", "300", "--scheduler", "fifo",
                     "--experiment", "cluster", "--mlflow-uri", f"sqlite:///{db}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    nodes = set()
    for result_file in (storage / "cluster").glob("trial_*/result.json"):
        for line in result_file.read_text().splitlines():
            nodes.add(json.loads(line)["node_id"])
    assert len(nodes) == 2, nodes
    client, runs = children(db, "cluster")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)



@pytest.mark.slow  # ~60-95 s of Ray Train start-up and a kill each; `make test-slow`
@pytest.mark.parametrize("kill_after", [1, 3], ids=["mid-trial", "after-the-last-epoch"])
def test_multi_worker_trial_trains_checkpoints_and_resumes(tmp_path, kill_after):
    """Killed mid-trial, the trial continues from its checkpoint; killed after its last epoch
    reached MLflow but before Ray marked it done, it reports that epoch again (it once ended
    without a result and Tune refused the resumed search for lacking the metric)."""
    db = tmp_path / "mlflow.db"
    storage = tmp_path / "ray"
    args = ["--space", "resnet1d", "--trials", "1", "--max-epochs", "3", "--samples", "600",
            "--workers-per-trial", "2", "--scheduler", "fifo", "--experiment", "ddp",
            "--mlflow-uri", f"sqlite:///{db}", "--storage", str(storage)]
    driver = subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = state_path(storage, "ddp")
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if state.exists() and any(t["last_step"] >= kill_after for t in
                                      json.loads(state.read_text())["trials"].values()):
                break
            time.sleep(0.3)
        else:
            pytest.fail("the DDP trial reported no epoch in time")
    finally:
        kill_tree(driver.pid)
    checkpoints = list((storage / "ddp_train").glob("train_*/checkpoint_*/checkpoint.pt"))
    assert checkpoints, "rank 0 must have written a checkpoint"

    result = run_cli("--resume", "--experiment", "ddp", "--storage", str(storage), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, runs = children(db, "ddp")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_top1")]
    assert steps == [1, 2, 3]
    # rank 0's pictures travel in the Train checkpoint; the driver logs them to the trial's run
    pictures = [a.path for a in client.list_artifacts(runs[0].info.run_id, "figures/epoch_003")]
    assert "figures/epoch_003/confusion_matrix.png" in pictures, pictures
    # resumed from the checkpoint: the Tune trial's results after the restart start past epoch 1
    trial_dir = next((storage / "ddp").glob("trial_*"))
    epochs = [json.loads(x)["epoch"] for x in
              (trial_dir / "result.json").read_text().splitlines() if x.strip()]
    assert epochs[-1] == 3 and epochs.count(1) <= 1, epochs  # epoch 1 never trained twice
    if kill_after == 1:
        assert epochs[-2:] == [2, 3], epochs
