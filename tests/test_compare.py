"""``launch.py compare``: searches read back from MLflow (a real server and a SQLite file), no mocks."""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from analysis.compare import from_trials, search_parents
from tests.conftest import run_cli

TINY = ("--space", "resnet1d", "--trials", "2", "--max-epochs", "1", "--samples", "300")
#: the tests of three searches at once (~120 s of searches): in the slow suite; by default
#: test_compare_a_finished_search reads the session's shared search back
THREE_SEARCHES = pytest.mark.slow


@pytest.fixture(scope="module")
def searches(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """``finished_search`` on the server, a second search (random searcher) on the same server
    and one in the default SQLite store of its cwd; the two tiny ones run beside the shared one."""
    server_cwd = tmp_path_factory.mktemp("compare-server")
    local_cwd = tmp_path_factory.mktemp("compare-local")
    uri = request.getfixturevalue("mlflow_server")
    with ThreadPoolExecutor(max_workers=2) as pool:
        second = pool.submit(run_cli, *TINY, "--searcher", "random", "--experiment", "compare-random",
                             "--mlflow-uri", uri, cwd=server_cwd, timeout=300)
        local = pool.submit(run_cli, *TINY, "--searcher", "qmc", "--scheduler", "fifo",
                            "--experiment", "compare-local", cwd=local_cwd, timeout=300)
        first = request.getfixturevalue("finished_search")
        for result in (second.result(), local.result()):
            assert result.returncode == 0, result.stderr[-3000:]
    return SimpleNamespace(uri=uri, first=first.experiment, first_storage=first.storage,
                           local_cwd=local_cwd, server_cwd=server_cwd)


def parent_of(uri: str, experiment: str):
    client = MlflowClient(uri)
    [parent] = search_parents(client, client.get_experiment_by_name(experiment))
    return client, parent


def row_of(stdout: str, experiment: str) -> list[str]:
    [line] = [line for line in stdout.splitlines() if line.split()[:1] == [experiment]]
    return line.split()


def test_compare_a_finished_search(finished_search, tmp_path: Path):
    """The session's shared search read back from its server: its row, its CSV, and one line
    naming the known searches for a name that is none of them."""
    experiment, uri = finished_search.experiment, finished_search.uri
    out = tmp_path / "cmp.csv"
    result = run_cli("compare", experiment, "--mlflow-uri", uri, "--csv", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent = parent_of(uri, experiment)
    cells = row_of(result.stdout, experiment)
    assert cells[1:5] == ["resnet1d", "tpe", "asha", "4/4"]
    assert cells[8] == f"{parent.data.metrics['best_val_top1']:.4g}"
    assert cells[-1] == parent.data.tags["best_run_id"] and cells[-4] == "FINISHED"
    [row] = pd.read_csv(out).to_dict("records")
    assert row["best"] == parent.data.metrics["best_val_top1"] and row["trials"] == 4
    assert row["search_run_id"] == parent.info.run_id and row["compute_seconds"] > 0
    missing = run_cli("compare", experiment, "no-such-search", "--mlflow-uri", uri, "--csv",
                      str(tmp_path / "x.csv"), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stdout == ""
    [line] = missing.stderr.strip().splitlines()
    assert line.startswith("error: no MLflow experiment 'no-such-search'") and experiment in line
    assert not (tmp_path / "x.csv").exists()


@THREE_SEARCHES
def test_compare_two_searches_on_one_server(searches, tmp_path: Path):
    out = tmp_path / "cmp.csv"
    result = run_cli("compare", searches.first, "compare-random", "--mlflow-uri", searches.uri,
                     "--csv", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].split()[:6] == ["experiment", "space", "searcher", "scheduler", "trials", "failed"]
    assert [line.split()[0] for line in lines[1:3]] == [searches.first, "compare-random"]  # as given
    table = pd.read_csv(out)
    assert list(table["experiment"]) == [searches.first, "compare-random"]
    for experiment, searcher, trials in ((searches.first, "tpe", 4), ("compare-random", "random", 2)):
        client, parent = parent_of(searches.uri, experiment)
        best = parent.data.metrics["best_val_top1"]
        cells = row_of(result.stdout, experiment)
        assert cells[1:5] == ["resnet1d", searcher, "asha", f"{trials}/{trials}"]
        assert cells[6:8] == ["val_top1", "(max)"] and cells[8] == f"{best:.4g}"
        assert cells[-1] == parent.data.tags["best_run_id"] and cells[-4] == "FINISHED"
        row = table.set_index("experiment").loc[experiment]
        assert (row["space"], row["searcher"], row["trials"], row["trials_requested"]) == \
            ("resnet1d", searcher, trials, trials)
        assert row["best"] == best and row["metric"] == "val_top1" and row["mode"] == "max"
        seed = parent.data.metrics.get("seed_val_top1", math.nan)  # none if the seed trial failed
        assert row["seed"] == seed or math.isnan(row["seed"]) and math.isnan(seed)
        assert row["best_minus_seed"] == pytest.approx(best - seed, nan_ok=True)
        assert row["trial_epochs"] == parent.data.metrics["trial_epochs"]
        assert row["compute_seconds"] > 0 and row["wall_seconds"] > 0
        assert row["status"] == "FINISHED" and not row["from_trials"]
        assert row["best_run_id"] == parent.data.tags["best_run_id"]
        assert row["search_run_id"] == parent.info.run_id
    reverse = run_cli("compare", "compare-random", searches.first, "--mlflow-uri", searches.uri,
                      "--csv", "-", cwd=tmp_path)
    assert reverse.returncode == 0, reverse.stderr[-3000:]
    assert list(pd.read_csv(io.StringIO(reverse.stdout))["experiment"]) == ["compare-random",
                                                                           searches.first]


@THREE_SEARCHES
def test_unknown_name_is_one_line_exit_2(searches, tmp_path: Path):
    result = run_cli("compare", searches.first, "no-such-search", "--mlflow-uri", searches.uri,
                     "--csv", str(tmp_path / "x.csv"), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: no MLflow experiment 'no-such-search'")
    assert searches.first in line and "compare-random" in line  # the known names
    assert not (tmp_path / "x.csv").exists()


@THREE_SEARCHES
def test_default_sqlite_store(searches, tmp_path: Path):
    result = run_cli("compare", "compare-local", "--csv", "rows.csv", cwd=searches.local_cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent = parent_of(f"sqlite:///{searches.local_cwd / 'mlflow.db'}", "compare-local")
    cells = row_of(result.stdout, "compare-local")
    assert cells[1:5] == ["resnet1d", "qmc", "fifo", "2/2"]
    assert cells[8] == f"{parent.data.metrics['best_val_top1']:.4g}"
    [row] = pd.read_csv(searches.local_cwd / "rows.csv").to_dict("records")
    assert row["best"] == parent.data.metrics["best_val_top1"] and row["trials"] == 2
    # no store in this cwd: an error, and none is created
    missing = run_cli("compare", "compare-local", cwd=tmp_path)
    assert missing.returncode == 2 and "no MLflow store" in missing.stderr
    assert not (tmp_path / "mlflow.db").exists()


@THREE_SEARCHES
def test_a_moved_sqlite_store_is_named_and_never_recreated(searches, tmp_path: Path):
    """The search's SQLite store is no longer where the search recorded it (moved, deleted):
    every reader made an empty store there and then reported the search unfinished
    ("no best configuration yet"), and --resume failed with a traceback."""
    import json
    import shutil

    from tracking.state import state_path

    storage = tmp_path / "ray_results"
    shutil.copytree(searches.local_cwd / "ray_results", storage)
    state_file = state_path(storage, "compare-local")
    gone = tmp_path / "gone" / "mlflow.db"
    gone.parent.mkdir()
    state = json.loads(state_file.read_text())
    state["tracking_uri"] = f"sqlite:///{gone}"  # where the search recorded its store
    state_file.write_text(json.dumps(state))
    common = ["--experiment", "compare-local", "--storage", str(storage)]
    for command in (["--export-best", "best.yaml"], ["report"], ["--resume"]):
        args = [*command[:1], *common, *command[1:]] if command[0] == "report" else \
            [*common, *command]
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr[-2000:])
        [line] = result.stderr.strip().splitlines()
        assert f"sqlite:///{gone}, does not exist (moved or deleted?)" in line, line
        assert not gone.exists() and not (tmp_path / "best.yaml").exists()
    # the store where it is now, given with --mlflow-uri
    real = f"sqlite:///{searches.local_cwd / 'mlflow.db'}"
    result = run_cli(*common, "--export-best", "best.yaml", "--mlflow-uri", real, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"tracking_uri: {real}" in (tmp_path / "best.yaml").read_text()


@THREE_SEARCHES
def test_the_search_vocabulary_names_the_searches_and_their_store(searches, tmp_path: Path):
    """--experiment and --storage mean what they mean to the search: the store is the one the
    searches in --storage recorded (no --mlflow-uri needed), and only their searches count."""
    result = run_cli("compare", "--experiment", searches.first, "--experiment", "compare-random",
                     "--storage", str(searches.first_storage), cwd=tmp_path)
    assert result.returncode == 2, result.stdout[-2000:]
    assert "'compare-random' holds no search with --storage" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("compare", "--experiment", searches.first, "--storage",
                     str(searches.first_storage), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split()[0] for line in result.stdout.splitlines()[1:2]] == [searches.first]
    assert not (tmp_path / "mlflow.db").exists()  # the recorded server was read, no default store
    # a glob over the folder's searches, with the store given explicitly
    result = run_cli("compare", "--experiment", "compare-*", "--storage",
                     str(searches.server_cwd / "ray_results"), "--mlflow-uri", searches.uri,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split()[0] for line in result.stdout.splitlines()[1:2]] == ["compare-random"]
    nothing = run_cli("compare", "--mlflow-uri", searches.uri, cwd=tmp_path)
    assert nothing.returncode == 2 and "name the searches to compare" in nothing.stderr


@THREE_SEARCHES
@pytest.mark.parametrize("experiment", ["first", "compare-random"])
def test_trial_runs_reproduce_the_summary(searches, experiment: str):
    """The fallback for interrupted searches computes what a finished search logged."""
    client, parent = parent_of(searches.uri, searches.first if experiment == "first" else experiment)
    figures = from_trials(client, parent, "val_top1", "max")
    metrics = parent.data.metrics
    assert figures["trials"] == metrics["trials"] and figures["failed"] == metrics["failed"]
    assert figures["trial_epochs"] == metrics["trial_epochs"]
    assert figures["compute_seconds"] == pytest.approx(metrics["compute_seconds"])
    assert figures["best"] == metrics["best_val_top1"]
    history = client.get_metric_history(figures["best_run_id"], "val_top1")
    assert max(m.value for m in history) == metrics["best_val_top1"]  # a run of the best (ties)
    if parent.data.params.get("space_file", "None") == "None":  # else projected: not recorded
        assert figures["seed"] == metrics["seed_val_top1"]


def _run(client: MlflowClient, experiment_id: str, tags: dict[str, str], params: dict[str, object],
         history: dict[str, list[float]], status: str) -> str:
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, v, 0, step) for k, values in history.items()
                              for step, v in enumerate(values, 1)])
    client.set_terminated(run_id, status=status)
    return run_id


def test_interrupted_and_legacy_searches(tmp_path: Path):
    """A KILLED parent without summary metrics is summarised from its trial runs (retrains
    ignored); an older parent without the run-kind tag is still found."""
    from search_spaces import get_space

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    common = {"space": "resnet1d", "searcher": "tpe", "scheduler": "median", "metric": "val_top1",
              "mode": "max"}
    cut = client.create_experiment("cut")
    parent = _run(client, cut, {**common, "scitune.run": "search"}, {"trials": 5}, {}, "KILLED")
    child = {**common, "scitune.run": "trial", "mlflow.parentRunId": parent}
    _run(client, cut, child, dict(get_space("resnet1d").seed_config),
         {"val_top1": [0.2, 0.3], "epoch_seconds": [1.0, 1.5]}, "FINISHED")
    _run(client, cut, child, {"lr": 0.1}, {"val_top1": [0.1], "epoch_seconds": [2.0]}, "FAILED")
    best = _run(client, cut, child, {"lr": 0.01},
                {"val_top1": [0.5, 0.4], "epoch_seconds": [0.25, 0.25]}, "KILLED")
    _run(client, cut, {**child, "scitune.run": "train"}, {}, {"val_top1": [0.99]}, "FINISHED")
    legacy = client.create_experiment("legacy")
    old = _run(client, legacy, common, {"trials": 1}, {}, "FINISHED")
    client.log_batch(old, metrics=[Metric(k, v, 0, 0) for k, v in
                                   {"trials": 1, "failed": 0, "trial_epochs": 3, "compute_seconds": 9,
                                    "best_val_top1": 0.7}.items()])
    _run(client, legacy, {**common, "mlflow.parentRunId": old}, {}, {"val_top1": [0.6, 0.7, 0.7]},
         "FINISHED")

    result = run_cli("compare", "c*", "legacy", "--mlflow-uri", uri, "--csv", "-", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_csv(io.StringIO(result.stdout)).set_index("experiment")
    assert list(rows.index) == ["cut", "legacy"]
    cut_row = rows.loc["cut"]
    assert (cut_row["status"], bool(cut_row["from_trials"])) == ("KILLED", True)
    assert (cut_row["trials"], cut_row["trials_requested"], cut_row["failed"]) == (2, 5, 1)
    assert (cut_row["best"], cut_row["best_run_id"], cut_row["seed"]) == (0.5, best, 0.3)
    assert cut_row["trial_epochs"] == 5 and cut_row["compute_seconds"] == pytest.approx(5.0)
    assert (rows.loc["legacy", "best"], rows.loc["legacy", "search_run_id"]) == (0.7, old)
    assert not rows.loc["legacy", "from_trials"]
    table = run_cli("compare", "cut", "--mlflow-uri", uri, cwd=tmp_path)
    assert "KILLED*" in table.stdout and "computed from its trial runs" in table.stdout
