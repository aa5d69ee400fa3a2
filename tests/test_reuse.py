"""From a finished search to reuse: narrowed spaces, the Optuna study, the best model in
MLflow's format, --export-best and ``train --config`` (against a real ``mlflow server``)."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from common.errors import BadInput
from tests.conftest import free_port, run_cli, stop_tree


def test_space_file_narrows_the_search_and_is_recorded(finished_search):
    from mlflow.tracking import MlflowClient

    from tracking.optuna_store import load_study
    from tracking.state import ExperimentState, state_path

    trials = load_study(finished_search.storage, finished_search.experiment).trials
    assert len(trials) == 4
    for trial in trials:
        p = trial.params
        assert p["n_stages"] == 2 and p["batch_size"] in (32, 64)
        assert 1e-3 <= p["lr"] <= 3e-3 and round(p["dropout"], 6) in (0.0, 0.1, 0.2)
        assert "stages/2/dim" not in p
    seed = trials[0].params  # the seed configuration, projected into the narrowed space
    assert (seed["lr"], seed["batch_size"], seed["dropout"]) == (1e-3, 64, 0.0)
    assert "seed configuration" in finished_search.stdout
    # no two "View run ... / View experiment ..." lines of MLflow's per trial on a server
    assert "View run" not in finished_search.stdout, finished_search.stdout

    state = ExperimentState.load(state_path(finished_search.storage, finished_search.experiment))
    stored = state.data["settings"]["space_file"]
    assert stored["params"]["n_stages"] == 2
    client = MlflowClient(finished_search.uri)
    seed_runs = [r for r in state.data["trials"].values()
                 if client.get_run(r["run_id"]).data.tags.get("scitune.seed") == "true"]
    assert len(seed_runs) == 1 and seed_runs[0]["config"]["lr"] == 1e-3  # the projected seed
    text = client.download_artifacts(state.data["parent_run_id"], "space_file.yaml")
    assert yaml.safe_load(open(text))["params"]["batch_size"] == {"choices": [32, 64]}


def test_every_trial_is_in_the_optuna_study_with_its_learning_curve(finished_search):
    from tracking.optuna_store import load_study

    study = load_study(finished_search.storage, finished_search.experiment)
    states = [t.state.name for t in study.trials]
    assert set(states) <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states
    for trial in study.trials:
        epochs = sorted(trial.intermediate_values)
        assert epochs == list(range(1, len(epochs) + 1)) and epochs, trial
        if trial.state.name == "COMPLETE":
            assert len(epochs) == 3 and trial.value == trial.intermediate_values[3]
        else:  # stopped by ASHA: PRUNED, with the values it reached
            assert len(epochs) < 3


def test_optuna_dashboard_serves_the_study(finished_search):
    """The documented command, ``optuna-dashboard <storage>/optuna.log``, on 127.0.0.1."""
    from tracking.optuna_store import journal_path

    assert f"optuna-dashboard {journal_path(finished_search.storage)}" in finished_search.stdout
    port = free_port()
    command = str(Path(sys.executable).with_name("optuna-dashboard"))  # the installed command
    proc = subprocess.Popen([command, str(journal_path(finished_search.storage)),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "dashboard died"
                time.sleep(0.5)
        study = next(s for s in studies if s["study_name"] == finished_search.experiment)
        url = f"http://127.0.0.1:{port}/api/studies/{study['study_id']}"
        with urllib.request.urlopen(url, timeout=10) as r:
            detail = json.load(r)
        assert len(detail["trials"]) == 4
        assert all(t["intermediate_values"] for t in detail["trials"])
    finally:
        stop_tree(proc)


def test_best_model_loads_from_the_parent_run_and_predicts(finished_search):
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    from tracking.state import ExperimentState, state_path

    state = ExperimentState.load(state_path(finished_search.storage, finished_search.experiment))
    parent = state.data["parent_run_id"]
    assert MlflowClient(finished_search.uri).get_run(parent).data.tags["model_uri"] == \
        f"runs:/{parent}/model"
    mlflow.set_tracking_uri(finished_search.uri)
    model = mlflow.pytorch.load_model(f"runs:/{parent}/model")
    local = mlflow.artifacts.download_artifacts(f"runs:/{parent}/model")
    example = mlflow.models.Model.load(local).load_input_example(local)  # validation inputs
    with torch.no_grad():
        scores = model(torch.from_numpy(np.asarray(example, dtype=np.float32)))
    assert scores.shape == (len(example), 14)  # 14 Bravais lattices
    assert torch.isfinite(scores).all()


def test_export_best_then_train_alone(finished_search, tmp_path):
    from mlflow.tracking import MlflowClient

    exported = yaml.safe_load(finished_search.best.read_text())  # written by the search itself
    assert exported["space"] == "resnet1d" and exported["config"]["n_stages"] == 2
    assert exported["source"]["experiment"] == finished_search.experiment
    # the same file again, from the finished experiment alone
    again = run_cli("--experiment", finished_search.experiment, "--export-best",
                    str(tmp_path / "again.yaml"), cwd=finished_search.cwd)
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load((tmp_path / "again.yaml").read_text())["config"] == exported["config"]
    # a target that cannot be written is refused in one line, before any work
    (tmp_path / "a_file").write_text("")
    for target, message in ((tmp_path / "a_file" / "best.yaml", "is a file, not a folder"),
                            (tmp_path / "best.txt", "name a .yaml file")):
        refused = run_cli("--experiment", finished_search.experiment, "--export-best",
                          str(target), cwd=finished_search.cwd)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr[-1500:]
        assert_one_error_line(refused.stderr, str(target))

    trained = run_cli("train", "--config", str(finished_search.best), "--max-epochs", "2",
                      "--mlflow-uri", finished_search.uri, "--experiment", "retrained",
                      cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "test_top1" in trained.stdout and "epoch 2/2" in trained.stdout
    client = MlflowClient(finished_search.uri)
    runs = client.search_runs([client.get_experiment_by_name("retrained").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.tags["scitune.run"] == "train"
    assert 0.0 <= run.data.metrics["test_top1"] <= 1.0 and math.isfinite(run.data.metrics["test_loss"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")] == [1, 2]
    assert {"best.yaml", "figures"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    import mlflow  # MLflow 3 keeps models as their own entities; runs:/ still resolves them
    import torch

    mlflow.set_tracking_uri(finished_search.uri)
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    assert model(torch.zeros(2, *model_input_shape(finished_search))).shape == (2, 14)


def test_train_refuses_bad_configs(tmp_path):
    good = {"space": "resnet1d", "config": {"lr": 1e-3}}
    cases = {
        "missing.yaml": None,
        "broken.yaml": "space: [resnet1d\n",
        "unknown_space.yaml": {"space": "nope", "config": {"lr": 1e-3}},
        "unknown_param.yaml": {**good, "config": {"learning_rate": 1e-3}},
        "wrong_type.yaml": {**good, "config": {"n_stages": "four"}},
        "no_config.yaml": {"space": "resnet1d"},
        "binary.yaml": bytes(range(128, 256)),
    }
    for name, content in cases.items():
        if content is not None:
            if isinstance(content, bytes):
                (tmp_path / name).write_bytes(content)
            else:
                (tmp_path / name).write_text(content if isinstance(content, str)
                                             else yaml.safe_dump(content))
        result = run_cli("train", "--config", name, "--max-epochs", "1", "--samples", "200",
                         cwd=tmp_path)
        assert result.returncode == 2, (name, result.stderr[-1500:])
        assert_one_error_line(result.stderr, name)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("data, flags, message", [
    ({"seed": -1}, [], "data: seed: -1: give a whole number from 0 to 4294967295"),
    ({"seed": "abc"}, [], "data: seed: 'abc': give a whole number"),
    ({"seed": 2**32}, [], "data: seed: 4294967296: give a whole number"),
    ({"samples": 0}, [], "data: samples: 0: give a whole number > 0"),
    ({"samples": 0}, ["--samples", "0"], "argument --samples: 0 must be > 0"),
    ({"options": ["length=100"]}, [], "data: options: must be a mapping"),
    ({"path": 5}, [], "data: path: 5: give the data file's path"),
    ({}, ["--seed", "-1"], "argument --seed: -1 must be from 0 to 4294967295"),
])
def test_train_refuses_a_bad_data_section(tmp_path, monkeypatch, data, flags, message):
    """The ``data:`` entries a hand-edited file may get wrong (each one read where no flag
    overrides it), checked in this process: the command line's one-line handling of
    BadInput is covered above."""
    from cli.train import run as train

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(
        {"space": "resnet1d", "config": {"lr": 1e-3}, "data": data}))
    with pytest.raises(BadInput) as raised:
        train(["--config", "c.yaml", "--max-epochs", "1", *flags])
    assert message in str(raised.value), str(raised.value)
    assert not (tmp_path / "mlflow.db").exists()


def assert_one_error_line(stderr: str, case: str) -> None:
    """Bad input: exactly one ``error:`` line, last on stderr (progress bars may precede it)."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), (case, stderr[-1500:])
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in stderr


def model_input_shape(search) -> tuple[int, ...]:
    from datasets import get_dataset

    settings = yaml.safe_load(search.best.read_text())["data"]
    spec = get_dataset("xrd")
    return spec.load(spec.prepare(None, settings["samples"], 0, {}), 0, {}).info.input_shape


# -- the space file, unit level -------------------------------------------------------------
def narrowed(tiny_data, params: dict, space_name: str = "resnet1d"):
    from search.space_file import narrowed_space
    from search_spaces import get_space

    space = get_space(space_name)
    return narrowed_space(space, tiny_data(space.dataset).info, {"path": "f.yaml", "params": params})


@pytest.mark.parametrize("params, message", [
    ({"learning_rate": 0.1}, "unknown parameter"),
    ({"lr": {"low": 1e-2, "high": 1e-3}}, "empty range"),
    ({"lr": {"low": 5.0, "high": 9.0}}, "outside the space"),
    ({"lr": "fast"}, "not a number"),
    ({"n_stages": 2.5}, "not an integer"),
    ({"n_stages": True}, "not a number"),
    ({"batch_size": {"choices": ["big"]}}, "wrong type"),
    ({"batch_size": {"choices": []}}, "non-empty list"),
    ({"lr": {"choices": [1e-3]}}, "not categorical"),
    ({"use_weight_decay": {"low": 0, "high": 1}}, "use choices"),
    ({"lr": {"low": 1e-4}}, "give low and high"),
    ({"lr": [1e-3, 2e-3]}, "ambiguous"),
])
def test_space_file_errors_name_the_problem(tiny_data, params, message):
    with pytest.raises(BadInput, match=message):
        narrowed(tiny_data, params)


def test_narrowed_space_samples_inside_and_survives_tune_checkpoints(tiny_data):
    import optuna

    # A stage's stride is bounded by its kernel: stride 4-5 needs a kernel of at least 5.
    space = narrowed(tiny_data, {"n_stages": 3, "lr": {"low": "2e-4", "high": 4e-4},
                                 "batch_size": {"choices": [128, 512]},
                                 "stages/0/kernel": {"low": 5, "high": 21},
                                 "stages/0/stride": {"low": 4, "high": 5}})
    suggest = pickle.loads(pickle.dumps(space.suggest))  # as Tune's searcher checkpoint does
    info = tiny_data("xrd").info
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(dict(space.seed_config))
    for _ in range(40):
        trial = study.ask()
        suggest(trial, info)
        p = trial.params
        assert p["n_stages"] == 3 and p["batch_size"] in (128, 512)
        assert 2e-4 <= p["lr"] <= 4e-4 and p["stages/0/stride"] in (4, 5)
        study.tell(trial, 0.0)
    assert space.seed_config["lr"] == 4e-4 and space.seed_config["batch_size"] == 128


def test_search_with_a_bad_space_file_exits_2_and_creates_nothing(tmp_path):
    (tmp_path / "bad.yaml").write_text("params:\n  lr: {low: 1e-2, high: 1e-3}\n")
    result = run_cli("--space", "resnet1d", "--trials", "2", "--samples", "200",
                     "--space-file", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "empty range" in result.stderr
    assert_one_error_line(result.stderr, "bad.yaml")
    assert "simulating" not in result.stderr, "a malformed range is refused before any work"
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_resume_searches_the_stored_space(finished_search):
    """``--resume`` takes the space file from the experiment (and refuses a new one)."""
    refused = run_cli("--resume", "--experiment", finished_search.experiment, "--space-file",
                      str(finished_search.space_file), "--mlflow-uri", finished_search.uri,
                      cwd=finished_search.cwd)
    assert refused.returncode == 2 and "drop --space-file" in refused.stderr
    resumed = run_cli("--resume", "--experiment", finished_search.experiment,
                      cwd=finished_search.cwd)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # the projected seed (lr 1e-3, batch 64, 2 stages) is still recognised as the seed
    assert "seed configuration: val_top1" in resumed.stdout
