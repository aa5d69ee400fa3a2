"""The Python API a notebook uses: ``run_search(SearchSettings(...)) -> SearchResult``, in this
process (real Ray, Optuna and MLflow on SQLite)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from common.errors import BadInput
from search import SearchSettings, run_search


@pytest.fixture
def restored_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_run_search_returns_the_result_as_objects(tmp_path, restored_environ, monkeypatch):
    """Also: the data are ready before Ray starts. Ray starts its processes with fork();
    numpy's OpenBLAS hangs for good when that happens during a threaded BLAS call in another
    thread (a CI search stuck 300 s in the XRD generator's matrix product). So the data work
    (here generated, not cached) ends before Ray's start begins.

    And the notebook's own MLflow state is left as it was: its tracking URI, and the run it
    had started (the search switched the process to the search's store for good, so the
    notebook's next log_param failed with "Run ... not found", and logging the best model
    failed with "Run ... is already active"). So is its environment: the search, and Ray's
    start, left seven variables set, among them PYTHONBREAKPOINT (the notebook's next
    ``breakpoint()`` opened Ray's remote debugger), RAY_AUTH_MODE and Tune's output style."""
    import time

    import mlflow
    import mlflow.pytorch

    import search.driver as driver

    spans: dict[str, list[float]] = {}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.monotonic()
            try:
                return function(*args, **kwargs)
            finally:
                spans[name] = [start, time.monotonic()]
        return wrapper

    monkeypatch.setenv("SCITUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(driver, "prepare_data", timed("data", driver.prepare_data))
    monkeypatch.setattr(driver, "init_ray", timed("ray", driver.init_ray))
    db = tmp_path / "mlflow.db"
    settings = SearchSettings(space="resnet1d", trials=3, max_epochs=2, samples=140,
                              experiment="api", mlflow_uri=f"sqlite:///{db}",
                              storage=str(tmp_path / "ray"), data_option={"intensities": "random"})
    notebook_uri = f"sqlite:///{tmp_path / 'notebook.db'}"
    mlflow.set_tracking_uri(notebook_uri)
    mlflow.set_experiment("my analysis")
    try:
        with mlflow.start_run() as mine:
            environment = dict(os.environ)
            result = run_search(settings)
            assert {k: os.environ.get(k) for k in set(os.environ) ^ set(environment)} == {}
            assert dict(os.environ) == environment
            assert mlflow.get_tracking_uri() == notebook_uri
            assert mlflow.active_run().info.run_id == mine.info.run_id
            mlflow.log_param("after_the_search", 1)
        assert MlflowClient(notebook_uri).get_run(mine.info.run_id).data.params == {
            "after_the_search": "1"}
        assert result.model_uri == f"runs:/{result.parent_run_id}/model"
        mlflow.set_tracking_uri(result.tracking_uri)  # the best model was logged
        assert mlflow.pytorch.load_model(result.model_uri) is not None
    finally:
        mlflow.set_tracking_uri(None)
    assert result.exit_code == 0
    assert set(spans) == {"data", "ray"}, spans
    assert spans["data"][1] <= spans["ray"][0], spans
    assert settings.storage == str(tmp_path / "ray")  # the caller's settings are not changed
    assert result.experiment == "api" and result.metric == "val_top1" and result.mode == "max"
    trials = result.trials
    assert len(trials) == 3 and trials["is_seed"].sum() == 1
    assert trials["best"].iloc[0] == result.best_value == trials["best"].max()
    assert {"config/lr", "config/batch_size"} <= set(trials.columns)
    assert result.best_config == {k.removeprefix("config/"): v
                                  for k, v in trials.iloc[0].items() if k.startswith("config/")
                                  and v == v}  # NaN: a parameter this trial did not sample
    assert result.best_checkpoint is not None and Path(result.best_checkpoint).is_file()
    client = MlflowClient(result.tracking_uri)
    children = client.search_runs(
        [client.get_experiment_by_name("api").experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert sorted(result.run_ids.values()) == sorted(r.info.run_id for r in children)
    assert result.best_run_id in result.run_ids.values()
    assert client.get_run(result.parent_run_id).data.metrics["best_val_top1"] == \
        pytest.approx(result.best_value)


def test_bad_settings_raise_bad_input_and_create_nothing(tmp_path, restored_environ):
    storage = tmp_path / "ray"
    with pytest.raises(BadInput, match="--grace-epochs 3 exceeds --max-epochs 2"):
        run_search(SearchSettings(max_epochs=2, grace_epochs=3, storage=str(storage)))
    with pytest.raises(BadInput, match="--searcher annealing: choose one of"):
        run_search(SearchSettings(searcher="annealing", storage=str(storage)))
    for wrong, message in (({"data_option": ["length=512"]}, "--data-option .*give a mapping"),
                           ({"experiment": 5}, "--experiment 5: give text"),
                           ({"warm_start": 5}, "--warm-start 5: give 'A,B' or a list"),
                           ({"resume": "yes"}, "--resume 'yes': give True or False"),
                           ({"max_failures": "1"}, "--max-failures '1': give a whole number"),
                           ({"data": ""}, "--data '': empty; give a path"),
                           ({"mlflow_uri": " "}, "--mlflow-uri ' ': empty; give a URI")):
        with pytest.raises(BadInput, match=message):  # the API's types, named as their flags
            run_search(SearchSettings(storage=str(storage), **wrong))
    for seed in (-1, 2**32, 1.5, True):  # Optuna's samplers take 0..2**32-1
        with pytest.raises(BadInput, match="--seed .*: give a whole number from 0 to 4294967295"):
            run_search(SearchSettings(seed=seed, storage=str(storage)))
    with pytest.raises(BadInput, match="unknown space|no space|not registered"):
        run_search(SearchSettings(space="nope", storage=str(storage),
                                  mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert not storage.exists() and not (tmp_path / "mlflow.db").exists()


def test_a_ray_the_notebook_started_is_refused_and_left_running(tmp_path, restored_environ):
    """A notebook that called ``ray.init()`` first: the search raised Ray's "Maybe you called
    ray.init twice by accident?" after it had made its folder and a FAILED parent run, and
    would have shut the notebook's Ray down at its end."""
    import ray

    storage, db = tmp_path / "ray", tmp_path / "mlflow.db"
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        with pytest.raises(BadInput, match=r"^Ray is already running in this process \(ray\."
                                           r"init\(\) was called before the search\); call "
                                           r"ray\.shutdown\(\) first"):
            run_search(SearchSettings(trials=1, samples=300, storage=str(storage),
                                      mlflow_uri=f"sqlite:///{db}"))
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert not storage.exists() and not db.exists()
