"""The contract every registered space must pass (like Optuna's sampler test suite).

A new space is tested the day it is registered: its define-by-run function samples valid
configurations that build, its seed configuration is inside its own space, one epoch of the
shared loop trains and reports the objective, and a checkpoint round-trips.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch

from search_spaces import registry
from trainables.checkpoint import load_state, save_state
from trainables.loop import FIGURES_KEY, FitSettings, fit, input_keys

SPACES = sorted(registry())
optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample_configs(space, info, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        constants = space.suggest(trial, info) or {}
        configs.append({**trial.params, **constants})
        study.tell(trial, 0.0)
    return configs


def trainable_seed_config(space) -> dict:
    """The seed configuration, with EWM's memory (``mem_size`` batches of transport pairs, one
    fit step per stored batch) cut to the space's low end: the seed's 5,000 batches take minutes
    per epoch on a CPU, and the contract is about the loop, not about that length."""
    config = dict(space.seed_config)
    if "mem_size" in config:
        config["mem_size"] = 50
    return config


def model_input(data, config, model, batch: int = 3) -> list[torch.Tensor]:
    """Real rows of the validation split, through the data set's own batch transform, for
    each array the model takes (``input_keys``)."""
    idx = np.sort(data.val[:batch])
    return [torch.from_numpy(np.asarray(data.batch(key, idx, config), dtype=np.float32))
            for key in input_keys(model)]


@pytest.mark.parametrize("name", SPACES)
def test_registration_is_complete(name):
    space = registry()[name]
    assert space.name == name
    assert space.mode in ("max", "min")
    assert callable(space.suggest) and callable(space.build)
    assert space.seed_config, "a space must record the seed's own configuration"


@pytest.mark.parametrize("name", SPACES)
def test_sampled_configs_build_and_run(name, tiny_data):
    space = registry()[name]
    data = tiny_data(space.dataset)
    for config in sample_configs(space, data.info, 25):
        model = space.build(config, data.info)
        model.eval()
        with torch.no_grad():
            out = model(*model_input(data, config, model))
        assert torch.isfinite(out).all()
        if space.kind == "classify":
            assert out.shape == (len(data.val[:3]), data.info.num_classes)


@pytest.mark.parametrize("name", SPACES)
def test_seed_config_lies_in_the_space(name, tiny_data):
    space = registry()[name]
    data = tiny_data(space.dataset)
    study = optuna.create_study()
    study.enqueue_trial(dict(space.seed_config))
    trial = study.ask()
    with _no_out_of_range_warning():
        space.suggest(trial, data.info)
    assert trial.params == dict(space.seed_config)


class _no_out_of_range_warning:
    """Optuna warns when an enqueued value lies outside the suggested range."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        bad = [w for w in self._caught if "not contained" in str(w.message)
               or "out of" in str(w.message)]
        assert not bad, [str(w.message) for w in bad]
        return False


@pytest.mark.parametrize("name", SPACES)
def test_one_epoch_reports_objective_and_checkpoint_round_trips(name, tiny_data, tmp_path):
    space = registry()[name]
    data = tiny_data(space.dataset)
    reports = []
    fit(space, trainable_seed_config(space), data, FitSettings(max_epochs=1, seed=0),
        report=lambda m, s: reports.append((m, s)))
    assert len(reports) == 1
    metrics, state = reports[0]
    assert math.isfinite(metrics[space.metric])
    assert metrics["epoch"] == 1
    missing = [m for m in space.extra_metrics if m not in metrics]
    assert not missing, f"declared but not reported: {missing}"

    save_state(state, str(tmp_path))
    restored = load_state(str(tmp_path))
    # the epoch's pictures (drawn in the trial or deferred) come back from the checkpoint
    # folder as the driver reads them, and draw as PNG
    from ray.train import Checkpoint

    from tracking.tracker import read_figures
    from trainables.figures import as_png

    pictures = read_figures(Checkpoint.from_directory(str(tmp_path)))
    assert set(pictures) == {f"{n}.png" for n in state.get(FIGURES_KEY) or {}}
    assert all(as_png(p).startswith(b"\x89PNG\r\n\x1a\n") for p in pictures.values())
    model = space.build(trainable_seed_config(space), data.info)
    model.load_state_dict(restored["model"])
    original = space.build(trainable_seed_config(space), data.info)
    original.load_state_dict(state["model"])
    model.eval(), original.eval()
    x = model_input(data, trainable_seed_config(space), model)
    with torch.no_grad():
        assert torch.equal(model(*x), original(*x))

    resumed = []
    fit(space, trainable_seed_config(space), data, FitSettings(max_epochs=2, seed=0),
        report=lambda m, s: resumed.append((m, s)), state=restored)
    assert [m["epoch"] for m, _ in resumed] == [2], "resume must continue after the saved epoch"
    # A multi-worker trial's restored epochs may never have reached the driver: the epochs its
    # checkpoint holds are reported again (earlier ones without a state), then training goes on.
    save_state(resumed[0][1], str(tmp_path / "epoch2"))
    replayed = []
    fit(space, trainable_seed_config(space), data,
        FitSettings(max_epochs=3, seed=0, replay_restored_epoch=True),
        report=lambda m, s: replayed.append((m, s)), state=load_state(str(tmp_path / "epoch2")))
    assert [m["epoch"] for m, _ in replayed] == [1, 2, 3]
    assert replayed[0][0][space.metric] == pytest.approx(metrics[space.metric])
    assert replayed[1][0][space.metric] == pytest.approx(resumed[0][0][space.metric])
    assert replayed[0][1] is None and [s["epoch"] for _, s in replayed[1:]] == [2, 3]
    assert [m["epoch"] for m in replayed[2][1]["history"]] == [1, 2, 3]

    # A checkpoint of the last epoch (the driver stopped before Ray marked the trial done)
    # reports that epoch again rather than ending without the metric, with the epoch's
    # pictures (the driver may have died before it logged them).
    again = []
    fit(space, trainable_seed_config(space), data, FitSettings(max_epochs=1, seed=0),
        report=lambda m, s: again.append((m, s)), state=restored)
    assert [m["epoch"] for m, _ in again] == [1]
    assert again[0][0][space.metric] == pytest.approx(metrics[space.metric])
    assert set(again[0][1].get(FIGURES_KEY) or {}) == set(state.get(FIGURES_KEY) or {})


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """A real SQLite MLflow store with one experiment (shared by the export tests)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow-export")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("export", artifact_location=(root / "art").as_uri())
    return client, experiment


@pytest.mark.parametrize("name", SPACES)
def test_trained_model_exports_to_mlflow_and_predicts(name, tiny_data, tmp_path, mlflow_store):
    """The best-model path: checkpoint → model → ``mlflow.pytorch`` (signature, input example)
    → ``load_model("runs:/<id>/model")`` predicts what the trained model predicts."""
    import mlflow

    from tracking.model_export import load_checkpoint_model, log_model

    space = registry()[name]
    data = tiny_data(space.dataset)
    config = trainable_seed_config(space)
    trained, states = [], []
    fit(space, config, data, FitSettings(max_epochs=1, seed=0),
        report=lambda m, s: states.append(s), prepare_model=lambda m: trained.append(m) or m)
    save_state(states[-1], str(tmp_path))
    model = load_checkpoint_model(space, config, data, tmp_path / "checkpoint.pt")

    client, experiment = mlflow_store
    run = client.create_run(experiment)
    uri = log_model(mlflow.get_tracking_uri(), run.info.run_id, model, data, config)
    loaded = mlflow.pytorch.load_model(uri)
    x = model_input(data, config, loaded)
    trained[0].eval()
    with torch.no_grad():
        expected, got = trained[0](*x), loaded(*x)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5)
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None and info.saved_input_example_info is not None
