"""Scale-out: a two-node Ray cluster on one host, and multi-worker (DDP) trials on CPU."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, free_port, kill_tree, run_cli, stop_tree
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


@pytest.fixture
def s3_storage(tmp_path):
    """An S3 server on 127.0.0.1 (moto's, the S3 protocol that pyarrow's S3 client speaks to
    AWS, MinIO or Ceph alike) with one bucket; yields the environment a search needs to use
    it (credentials and ``AWS_ENDPOINT_URL``). Stopped by pid afterwards."""
    import urllib.request

    import boto3

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "s3.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "scitune", "AWS_SECRET_ACCESS_KEY": "scitune-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url,
           "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the S3 server did not start: "
                                       + (tmp_path / "s3.log").read_text()[-2000:]) from None
                time.sleep(0.3)
        boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                     aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]
                     ).create_bucket(Bucket="scitune")
        yield env
    finally:
        stop_tree(proc)
        log.close()


def checkpoint_epochs(env: dict[str, str], folder: str) -> list[int]:
    """The epochs of the checkpoints under ``folder`` (``bucket/path``) on the S3 server."""
    import torch
    from pyarrow import fs as pafs

    filesystem = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], region="us-east-1",
                                   access_key=env["AWS_ACCESS_KEY_ID"],
                                   secret_key=env["AWS_SECRET_ACCESS_KEY"])
    epochs = []
    for info in filesystem.get_file_info(pafs.FileSelector(folder, recursive=True,
                                                           allow_not_found=True)):
        if info.base_name == "checkpoint.pt":
            try:
                with filesystem.open_input_stream(info.path) as stream:
                    state = torch.load(io.BytesIO(stream.read()), map_location="cpu",
                                       weights_only=True)
            except OSError:  # removed since the listing (Ray keeps the newest two)
                continue
            epochs.append(int(state["epoch"]))
    return sorted(epochs)


@pytest.mark.slow  # ~2 min: Ray Train start-up twice, a stopped and killed driver
def test_multi_worker_search_on_s3_storage_resumes_with_every_epoch(s3_storage, tmp_path,
                                                                       monkeypatch):
    """``--storage s3://...``: a two-worker trial whose driver stops listening after epoch 1
    (its workers go on training and checkpointing to the last epoch) and is then killed.
    Resumed, every epoch reaches MLflow once, and the search's best checkpoint and model are
    read back from S3 onto the parent run."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the driver's state of a cloud search
    for key, value in s3_storage.items():
        monkeypatch.setenv(key, value)
    db, storage = tmp_path / "mlflow.db", "s3://scitune/searches"
    args = ["--space", "resnet1d", "--trials", "1", "--max-epochs", "4", "--samples", "600",
            "--workers-per-trial", "2", "--scheduler", "fifo", "--experiment", "cloud",
            "--mlflow-uri", f"sqlite:///{db}", "--storage", storage]
    driver = subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = state_path(storage, "cloud")
    assert str(state).startswith(str(tmp_path / "home"))
    try:
        deadline = time.time() + 300
        while not (state.exists() and any(t["last_step"] >= 1 for t in
                                           json.loads(state.read_text())["trials"].values())):
            assert time.time() < deadline, "the trial reported no epoch in time"
            time.sleep(0.3)
        os.kill(driver.pid, signal.SIGSTOP)  # the driver hears no more results
        deadline = time.time() + 180
        while 4 not in checkpoint_epochs(s3_storage, "scitune/searches/cloud_train"):
            assert time.time() < deadline, "the workers did not train on without the driver"
            time.sleep(1)
        received = json.loads(state.read_text())["trials"].popitem()[1]["last_step"]
        assert received <= 2, f"the driver received epoch {received} before it was stopped"
    finally:
        kill_tree(driver.pid)

    result = run_cli("--resume", "--experiment", "cloud", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, runs = children(db, "cloud")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_top1")]
    assert steps == [1, 2, 3, 4]  # epochs 2-4 were checkpointed, never received, replayed
    pictures = [a.path for a in client.list_artifacts(runs[0].info.run_id, "figures/epoch_004")]
    assert "figures/epoch_004/confusion_matrix.png" in pictures, pictures
    # the best checkpoint came back from S3: on the parent run, with its model, and named by
    # a URI a user can open
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert "best_checkpoint.pt" in [a.path for a in client.list_artifacts(parent.info.run_id)], \
        result.stdout[-3000:]
    assert parent.data.tags.get("model_uri"), parent.data.tags
    line = next(x for x in result.stdout.splitlines() if x.startswith("best checkpoint:"))
    assert line.split(": ", 1)[1].strip().startswith("s3://scitune/searches/cloud_train/"), line



@pytest.mark.parametrize("mode, values, removed, expected", [
    ("max", [0.5, 0.5, 0.4, 0.3], [], 1),  # the earlier of equal bests
    ("max", [0.5, 0.5, 0.4, 0.3], [1], 2),  # Ray removed it: the next best still there
    ("max", [0.2, 0.2, 0.2, 0.2], [1, 2], 3),  # a flat curve, the early checkpoints removed
    ("min", [0.3, 0.1, 0.2, 0.4], [2, 3], 1),
    ("min", [0.3, 0.1, 0.2, 0.4], [1, 2, 3, 4], None),
])
def test_best_checkpoint_of_a_multi_worker_trial_is_one_that_exists(tmp_path, mode, values,
                                                                    removed, expected):
    """A multi-worker trial's checkpoints are listed in its results (``checkpoint_path``);
    Ray keeps only some of them. The best one still on the storage is taken (the earliest
    best was taken even when removed, and the search's best model was lost)."""
    import shutil

    import pandas as pd
    from ray.tune import Result

    from search.summary import best_checkpoint

    folders = [tmp_path / f"checkpoint_{epoch}" for epoch in range(1, len(values) + 1)]
    for folder in folders:
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(b"x")
    for epoch in removed:
        shutil.rmtree(folders[epoch - 1])
    frame = pd.DataFrame({"epoch": range(1, len(values) + 1), "val_top1": values,
                          "checkpoint_path": [str(f) for f in folders]})
    result = Result(metrics=frame.iloc[-1].to_dict(), checkpoint=None, error=None,
                    path=str(tmp_path), metrics_dataframe=frame, best_checkpoints=[])
    chosen = best_checkpoint(result, "val_top1", mode)
    if expected is None:
        assert chosen is None
    else:
        assert chosen is not None and chosen.path == str(folders[expected - 1])
