"""End to end through the real CLI, Ray, Optuna and MLflow on SQLite (no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, kill_tree, run_cli
from tracking.state import state_path

CHANCE_CRYSTAL_SYSTEM = 1 / 7


def runs_of(db: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def assert_exactly_once(client, parents, children, trials: int, max_epochs: int):
    assert len(parents) == 1
    assert len(children) == trials
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    ids = Counter(c.data.tags["trial_id"] for c in children)
    assert all(n == 1 for n in ids.values()), ids
    for child in children:
        assert child.info.status == "FINISHED", (child.info.run_name, child.info.status,
                                                 child.data.tags.get("failure_reason"))
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_top1")]
        assert steps == list(range(1, len(steps) + 1)), steps  # each epoch once, in order
        assert 1 <= len(steps) <= max_epochs


def test_search_end_to_end(tmp_path):
    db = tmp_path / "mlflow.db"
    result = run_cli("--space", "resnet1d", "--trials", "4", "--max-epochs", "3",
                     "--samples", "1000", "--data-option", "labels=crystal_system",
                     "--experiment", "e2e", "--mlflow-uri", f"sqlite:///{db}",
                     "--storage", str(tmp_path / "ray"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "seed configuration" in result.stdout and "best checkpoint:" in result.stdout
    assert "trials 4/4 done" in result.stdout and "Trial status" not in result.stdout
    assert "A new study created" not in result.stdout + result.stderr  # Optuna's INFO line
    client, parents, children = runs_of(db, "e2e")
    assert_exactly_once(client, parents, children, trials=4, max_epochs=3)
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    for tag in ("space", "searcher", "scheduler", "seed", "git_commit"):
        assert tag in parent.data.tags
    assert parent.data.metrics["best_val_top1"] > CHANCE_CRYSTAL_SYSTEM
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_config.json", "best_checkpoint.pt"} <= artifacts
    seed_runs = [c for c in children if c.data.params.get("first_kernel_size") == "13"
                 and c.data.params.get("lr") == "0.0005"]
    assert seed_runs, "the seed configuration must be one of the trials"
    assert {"lr", "n_stages", "stages/0/dim", "batch_size"} <= set(children[0].data.params)
    # Tune writes result.json per trial, not its CSV and TensorBoard copies (MLflow has them)
    trial_dirs = list((tmp_path / "ray" / "e2e").glob("trial_*"))
    assert len(trial_dirs) == 4 and all((d / "result.json").stat().st_size > 0 for d in trial_dirs)
    assert not list((tmp_path / "ray" / "e2e").glob("trial_*/progress.csv"))
    assert not list((tmp_path / "ray" / "e2e").glob("trial_*/events.out.tfevents*"))
    # the Optuna journal (optuna-dashboard) holds every trial, the seed's included
    from tracking.optuna_store import load_study

    assert "warning:" not in result.stderr, result.stderr[-2000:]
    study = load_study(tmp_path / "ray", "e2e")
    assert len(study.trials) == 4 and all(t.intermediate_values for t in study.trials)
    assert any(t.params.get("stages/3/stride") == 3 and t.params.get("first_kernel_size") == 13
               for t in study.trials), "the seed configuration must be in the journal"



@pytest.mark.slow  # by default test_ctrl_c_leaves_no_run_running_and_resume_finishes resumes one
def test_resume_after_driver_is_killed(tmp_path):
    db = tmp_path / "mlflow.db"
    storage = tmp_path / "ray"
    args = ["--space", "resnet1d", "--trials", "5", "--max-epochs", "3", "--samples", "600",
            "--scheduler", "fifo", "--concurrency", "2", "--experiment", "kill",
            "--mlflow-uri", f"sqlite:///{db}", "--storage", str(storage)]
    driver = subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dict(os.environ))
    state_file = state_path(storage, "kill")
    deadline = time.time() + 300
    killed = False
    try:
        while time.time() < deadline and driver.poll() is None:
            if state_file.exists():
                trials = json.loads(state_file.read_text())["trials"]
                done = [t for t in trials.values() if t["status"] == "FINISHED"]
                if done and any(t["status"] == "RUNNING" and t["last_step"] >= 1
                                for t in trials.values()):
                    kill_tree(driver.pid)
                    killed = True
                    break
            time.sleep(0.2)
    finally:
        if driver.poll() is None and not killed:
            kill_tree(driver.pid)
    assert killed, "the driver finished before it could be killed; slow the search down"
    before = json.loads(state_file.read_text())["trials"]
    finished_before = {k: v["run_id"] for k, v in before.items() if v["status"] == "FINISHED"}

    result = run_cli("--resume", "--experiment", "kill", "--storage", str(storage),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, parents, children = runs_of(db, "kill")
    assert_exactly_once(client, parents, children, trials=5, max_epochs=3)
    after = json.loads(state_file.read_text())["trials"]
    for trial_id, run_id in finished_before.items():
        assert after[trial_id]["run_id"] == run_id  # reused, not re-run
    assert parents[0].info.status == "FINISHED"


def test_resume_refuses_unknown_experiment_and_other_space(tmp_path):
    result = run_cli("--resume", "--experiment", "nothing", "--storage", str(tmp_path / "r"),
                     cwd=tmp_path)
    assert result.returncode == 2 and "no experiment 'nothing'" in result.stderr
    old_state = state_path(tmp_path / "r", "old")
    old_state.parent.mkdir(parents=True)
    old_state.write_text(json.dumps(
        {"parent_run_id": "x", "settings": {"space": "resnet1d"}, "trials": {}}))
    result = run_cli("--resume", "--experiment", "old", "--space", "other",
                     "--storage", str(tmp_path / "r"), cwd=tmp_path)
    assert result.returncode == 2 and "searches space 'resnet1d'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_search_stopped_during_set_up_is_started_again_not_resumed(tmp_path):
    """A start killed during set-up leaves an empty experiment folder and no state: --resume
    says to start again; a folder that is not a search of this platform is never touched."""
    storage = tmp_path / "r"
    (storage / "setup").mkdir(parents=True)
    result = run_cli("--resume", "--experiment", "setup", "--storage", str(storage), cwd=tmp_path)
    assert result.returncode == 2 and "stopped during its set-up" in result.stderr
    assert "without --resume" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    foreign = storage / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone's results")
    result = run_cli("--space", "resnet1d", "--trials", "1", "--experiment", "foreign",
                     "--storage", str(storage), "--mlflow-uri", f"sqlite:///{tmp_path}/m.db",
                     cwd=tmp_path)
    assert result.returncode == 2 and "not a search of this platform" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (foreign / "notes.txt").read_text() == "someone's results"
    assert not (tmp_path / "m.db").exists()
    state = state_path(storage, "recorded")  # a recorded search is continued, not restarted
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"parent_run_id": "x", "settings": {"space": "resnet1d"},
                                 "trials": {}}))
    result = run_cli("--space", "resnet1d", "--experiment", "recorded", "--storage", str(storage),
                     cwd=tmp_path)
    assert result.returncode == 2 and "continue it with --resume" in result.stderr


@pytest.mark.slow  # one small search
def test_restart_after_a_start_stopped_during_set_up_closes_its_parent_run(tmp_path):
    """A start stopped between creating its MLflow parent run and recording the state leaves
    that run RUNNING and an empty experiment folder; starting again closes it as KILLED."""
    from tracking.store import RUN_KIND_TAG, STORAGE_TAG

    db, storage = tmp_path / "mlflow.db", tmp_path / "ray"
    (storage / "again").mkdir(parents=True)
    client = MlflowClient(f"sqlite:///{db}")
    experiment_id = client.create_experiment("again")
    tags = {RUN_KIND_TAG: "search", STORAGE_TAG: str(storage.resolve()),
            "mlflow.runName": "again (search)"}
    orphan = client.create_run(experiment_id, tags=tags).info.run_id
    other = client.create_run(experiment_id, tags=dict(tags, **{STORAGE_TAG: "/elsewhere"}))
    result = run_cli("--space", "resnet1d", "--trials", "1", "--max-epochs", "1",
                     "--samples", "100", "--experiment", "again", "--storage", str(storage),
                     "--mlflow-uri", f"sqlite:///{db}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "was stopped during its set-up before; starting it again" in result.stdout
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"  # another storage's
    _, parents, children = runs_of(db, "again")
    new = [p for p in parents if p.info.run_id not in (orphan, other.info.run_id)]
    assert len(new) == 1 and new[0].info.status == "FINISHED" and len(children) == 1


@pytest.mark.slow  # ~25 s: a search, its data rewritten, two resumes
def test_resume_refuses_data_that_changed_since_the_search_started(tmp_path):
    """The user's file rewritten between the start and the --resume: the resumed trials would
    have been ranked against the finished ones on other data, silently."""
    import h5py
    import numpy as np

    data = tmp_path / "patterns.h5"
    rng = np.random.default_rng(0)
    with h5py.File(data, "w") as f:
        f["patterns"] = rng.random((90, 256), dtype=np.float32)
        f["labels"] = np.arange(90) % 14
    original = data.read_bytes()
    common = ["--experiment", "same", "--storage", str(tmp_path / "ray")]
    result = run_cli("--data", str(data), "--trials", "1", "--max-epochs", "1",
                     "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with h5py.File(data, "a") as f:  # one pattern corrected in place
        f["patterns"][45] = 0.5
    result = run_cli("--resume", *common, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]  # after the "data: assuming ..." note
    assert line.startswith("error: --resume: the data of 'same' are not those it started "
                           "with"), line
    from search.driver import check_same_data

    stored = json.loads(state_path(tmp_path / "ray", "same").read_text())["settings"]
    data.write_bytes(original)  # a copy of the original bytes (a new mtime) is the same data
    check_same_data("same", stored, str(data))
