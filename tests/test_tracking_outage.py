"""The MLflow tracking server stops answering during a search (a team server restarted, a
tunnel dropped): the search says so while MLflow retries, stops in one line naming the way
to continue, and ``--resume`` finishes it with every epoch logged exactly once. Real
``mlflow server`` processes on 127.0.0.1, stopped and frozen by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.errors import TrackingFailed, root_cause, transport_failure
from tests.conftest import (
    REPO,
    free_port,
    kill_tree,
    run_cli,
    start_mlflow_server,
    stop_tree,
)
from tracking.state import state_path

#: MLflow's own retries shortened (its default waits about four minutes per request)
FEW_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def search(tmp_path: Path, url: str, experiment: str, *extra: str,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    args = ["--space", "resnet1d", "--trials", "6", "--max-epochs", "3", "--samples", "300",
            "--scheduler", "fifo", "--experiment", experiment, "--mlflow-uri", url,
            "--storage", str(tmp_path / "ray"), *extra]
    return subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_for_a_logged_epoch(storage: Path, experiment: str, driver: subprocess.Popen) -> None:
    deadline = time.time() + 240
    path = state_path(storage, experiment)
    while time.time() < deadline and driver.poll() is None:
        if path.exists() and any(t["last_step"] >= 1 for t in
                                 json.loads(path.read_text())["trials"].values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"no epoch was logged (exit code {driver.poll()})")


def logged_steps(url: str, experiment: str) -> tuple[str, dict[str, tuple[str, list[int]]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    return parent.info.status, {
        r.info.run_name: (r.info.status,
                          [m.step for m in client.get_metric_history(r.info.run_id, "val_top1")])
        for r in runs if "mlflow.parentRunId" in r.data.tags}


def test_a_write_to_a_stopped_server_fails_with_its_reason(tmp_path):
    """The tracker's writer thread turns MLflow's nested errors into one reason (here the port
    of a server that is gone: nothing listens there)."""
    from tracking.state import ExperimentState
    from tracking.tracker import MlflowTracker

    url = f"http://127.0.0.1:{free_port()}"
    state = ExperimentState(tmp_path / "state.json", {
        "parent_run_id": "0" * 32, "mlflow_experiment_id": "1", "tracking_uri": url,
        "trials": {}})
    state.save()
    tracker = MlflowTracker(url, str(state.path), 3, {}, "val_top1")
    saved = {k: os.environ.get(k) for k in FEW_RETRIES}
    os.environ.update(FEW_RETRIES)
    try:
        tracker._submit(tracker._started, ("t1", "trial_t1", {"lr": 0.1}))
        with pytest.raises(TrackingFailed) as failed:
            tracker.flush()
        with pytest.raises(TrackingFailed):  # and every later event
            tracker._submit(tracker._started, ("t2", "trial_t2", {"lr": 0.2}))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert failed.value.tracking_uri == url
    assert failed.value.reason == "ConnectionRefusedError: [Errno 111] Connection refused"
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as inner:
            raise RuntimeError("API request failed\nwith details") from inner
    except RuntimeError as outer:
        assert root_cause(outer) == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert root_cause(ValueError()) == "ValueError"
    import requests

    try:
        try:
            raise requests.exceptions.ConnectionError("Max retries exceeded") from \
                ConnectionRefusedError(111, "Connection refused")
        except requests.exceptions.RequestException as inner:
            raise RuntimeError("API request to http://127.0.0.1:9 failed") from inner
    except RuntimeError as outer:
        assert transport_failure(outer) == \
            "ConnectionRefusedError: [Errno 111] Connection refused"
    assert transport_failure(RuntimeError("a bug")) is None


@pytest.mark.slow  # ~70 s: two server starts, a search stopped by the outage and its resume
def test_a_server_that_stops_answering_stops_the_search_in_one_line_and_resume_finishes(
        tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    server, url = start_mlflow_server(root)
    port = int(url.rsplit(":", 1)[1])
    driver = search(tmp_path, url, "outage", env=FEW_RETRIES)
    try:
        wait_for_a_logged_epoch(tmp_path / "ray", "outage", driver)
        stop_tree(server)
        out, err = driver.communicate(timeout=300)
    finally:
        stop_tree(server)
        if driver.poll() is None:
            kill_tree(driver.pid)
    assert driver.returncode == 1, (out[-2000:], err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    resume = (f"python launch.py --resume --experiment outage --storage {tmp_path / 'ray'}")
    assert err.strip().splitlines()[-1] == (
        f"error: the MLflow store {url} failed during the search (ConnectionRefusedError: "
        f"[Errno 111] Connection refused); every trial's checkpoints and results are kept in "
        f"{tmp_path / 'ray'}. Once the store answers again, continue with: {resume}")
    assert "could not close" not in err  # no second wait of MLflow's retries on the way out

    server, _ = start_mlflow_server(root, port)
    try:
        resumed = run_cli(*resume.split()[2:], cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        parent, runs = logged_steps(url, "outage")
    finally:
        stop_tree(server)
    assert parent == "FINISHED" and len(runs) == 6, runs
    for name, (status, steps) in runs.items():  # every epoch once, none lost
        assert status == "FINISHED" and steps == [1, 2, 3], (name, status, steps)


@pytest.mark.slow  # ~75 s: a search held 40 s by a frozen server
def test_a_frozen_server_is_said_and_the_search_goes_on_when_it_answers(tmp_path):
    import psutil

    server, url = start_mlflow_server(tmp_path)
    family = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    driver = search(tmp_path, url, "frozen")
    try:
        wait_for_a_logged_epoch(tmp_path / "ray", "frozen", driver)
        for p in family:
            p.send_signal(signal.SIGSTOP)
        time.sleep(40)  # longer than tracking.tracker's STALL_WARNING_S
        for p in family:
            p.send_signal(signal.SIGCONT)
        out, err = driver.communicate(timeout=300)
        parent, runs = logged_steps(url, "frozen")
    finally:
        for p in family:
            try:
                p.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
        stop_tree(server)
        if driver.poll() is None:
            kill_tree(driver.pid)
    assert driver.returncode == 0, (out[-2000:], err[-3000:])
    assert f"warning: the MLflow store {url} has not answered for" in err, err[-3000:]
    assert "the MLflow store answers again; the search goes on" in err, err[-3000:]
    assert parent == "FINISHED" and len(runs) == 6, runs
    for name, (status, steps) in runs.items():
        assert status == "FINISHED" and steps == [1, 2, 3], (name, status, steps)


@pytest.mark.slow  # ~40 s: a server start and a training run stopped by its outage
def test_train_whose_server_stops_answering_ends_in_one_line(tmp_path):
    import yaml

    from search_spaces import get_space

    seed = dict(get_space("resnet1d").seed_config)
    (tmp_path / "best.yaml").write_text(yaml.safe_dump({"space": "resnet1d", "config": seed}))
    server, url = start_mlflow_server(tmp_path)
    train = subprocess.Popen(
        [sys.executable, str(REPO / "launch.py"), "train", "--config", "best.yaml",
         "--max-epochs", "50", "--samples", "300", "--mlflow-uri", url],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **FEW_RETRIES})
    try:
        assert train.stdout is not None
        for line in train.stdout:  # the first epoch was logged
            if line.startswith("epoch 1/50"):
                break
        stop_tree(server)
        out, err = train.communicate(timeout=300)
    finally:
        stop_tree(server)
        if train.poll() is None:
            kill_tree(train.pid)
    assert train.returncode == 1, (out[-2000:], err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"error: the MLflow store {url} stopped answering during training "
        "(ConnectionRefusedError: [Errno 111] Connection refused); start it again (or give "
        "another --mlflow-uri) and run the command again")
