"""``--warm-start`` and ``--prior FILE`` for real: an earlier search (Ray, MLflow on SQLite), a
later one that starts from its trials and its exported best, interrupted and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from common.errors import BadInput
from search import SearchSettings, run_search
from tests.conftest import REPO, kill_tree, run_cli
from tracking.state import state_path

SMALL = ["--samples", "140", "--data-option", "intensities=random"]


@pytest.fixture
def restored_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def restored_study(experiment_dir: Path):
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch()
    searcher.restore_from_dir(str(experiment_dir))
    return searcher._ot_study


@pytest.mark.slow  # ~40 s: three searches and a resume
def test_warm_start_and_file_prior_survive_a_resume(tmp_path, restored_environ):
    from analysis.export import write_best
    from datasets import get_dataset
    from search.space_file import narrowed_space, read
    from search.warm_start import collect
    from search_spaces import get_space
    from tracking.record import SearchRecord

    db, storage = tmp_path / "mlflow.db", tmp_path / "ray"
    uri = f"sqlite:///{db}"
    earlier = run_search(SearchSettings(
        space="resnet1d", trials=3, max_epochs=2, samples=140, scheduler="fifo",
        data_option={"intensities": "random"}, experiment="earlier", mlflow_uri=uri,
        storage=str(storage)))
    assert earlier.exit_code == 0
    best = write_best(str(storage), "earlier", tmp_path / "best.yaml")

    # what the study is given: every earlier trial, with its per-epoch values
    record = SearchRecord.load(str(storage), "earlier")
    settings = record.settings
    info = get_dataset("xrd").load(settings["data_path"], 0, settings["data_option"]).info
    space = get_space("resnet1d")
    warm = collect(["earlier"], space, info, uri)
    assert (warm.searches, len(warm.trials), warm.skipped_unfit) == (1, 3, 0)
    by_run = {t.user_attrs["warm_start_run_id"]: t for t in warm.trials}
    assert set(by_run) == set(earlier.run_ids.values())
    for run_id, trial in by_run.items():
        assert trial.state.name == "COMPLETE"
        assert list(trial.intermediate_values.values()) == record.history(run_id)
        assert trial.value == record.history(run_id)[-1]

    # a narrowed space skips what no longer fits, and says how many
    keep = 64
    (tmp_path / "narrow.yaml").write_text(f"params:\n  batch_size: {keep}\n")
    narrow = narrowed_space(space, info, read(tmp_path / "narrow.yaml", "resnet1d"))
    fitting = sum(str(v) == str(keep) for v in earlier.trials["config/batch_size"])
    warm = collect(["earlier"], narrow, info, uri)
    assert len(warm.trials) == fitting and warm.skipped_unfit == 3 - fitting
    assert f"{3 - fitting} skipped: their parameters no longer fit" in warm.describe(["earlier"]) \
        or fitting == 3
    with pytest.raises(BadInput, match="no such MLflow experiment"):
        collect(["nope"], space, info, uri)
    with pytest.raises(BadInput, match="no search of space 'etmiss'"):
        collect(["earlier"], get_space("etmiss"), info, uri)

    # the later search: warm start + the exported best as prior + Hyperband; Ctrl-C, resume
    args = ["--space", "resnet1d", "--trials", "4", "--max-epochs", "3", *SMALL,
            "--warm-start", "earlier", "--prior", str(best), "--scheduler", "hyperband",
            "--concurrency", "1", "--experiment", "later", "--mlflow-uri", uri,
            "--storage", str(storage)]
    driver = subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            path = state_path(storage, "later")
            if path.exists() and sum(t["last_step"] >= 1 for t in
                                     json.loads(path.read_text())["trials"].values()) >= 2:
                break
            time.sleep(0.2)
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            kill_tree(driver.pid)
    assert driver.returncode == 130, (out + err)[-3000:]
    assert "warm start from earlier: 3 trials of 1 earlier search(es)" in out
    # the prior's file moved away since: the resumed searcher keeps the prior it had
    moved = best.rename(tmp_path / "moved.yaml")
    resumed = run_cli("--resume", "--experiment", "later", "--storage", str(storage),
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(kept from the search's checkpoint)" in resumed.stdout
    moved.rename(best)

    stored = json.loads(state_path(storage, "later").read_text())["settings"]
    assert stored["prior"] == str(best) and stored["warm_start"] == ["earlier"]
    assert stored["scheduler"] == "hyperband"
    study = restored_study(storage / "later")
    trials = study.get_trials(deepcopy=False)
    warm_trials = [t for t in trials if "warm_start_run_id" in t.user_attrs]
    assert {t.user_attrs["warm_start_run_id"] for t in warm_trials} == set(by_run)
    assert isinstance(study.pruner, __import__("optuna").pruners.HyperbandPruner)
    own = [t for t in trials if "warm_start_run_id" not in t.user_attrs]
    assert len(own) == 4
    # the seed first, then the file's configuration as it is
    centre = {k: v for k, v in best_config(best).items() if k in own[1].params}
    assert own[1].params == centre
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("later")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)


def best_config(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())["config"]
