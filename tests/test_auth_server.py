"""A team's MLflow server with authentication (``mlflow server --app-name basic-auth``, a real
process on 127.0.0.1): a search without, or with wrong, credentials is refused in one line
before any work; with them, it runs and logs as on an open server."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli, start_mlflow_server, stop_tree

ADMIN_PASSWORD = "a-long-enough-password"
SEARCH = ("--space", "resnet1d", "--trials", "2", "--max-epochs", "1", "--samples", "140",
          "--data-option", "intensities=random", "--experiment", "team")


@pytest.mark.slow  # ~70 s: an authenticated server, two refused searches and one that runs
def test_an_authenticated_server_refuses_in_one_line_then_takes_a_search(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    server, url = start_mlflow_server(root, None, "--app-name", "basic-auth", env={
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-secret"})
    try:
        storage = tmp_path / "ray"
        no_credentials = {"MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None,
                          "MLFLOW_TRACKING_TOKEN": None}
        refused = run_cli(*SEARCH, "--mlflow-uri", url, "--storage", str(storage),
                          cwd=tmp_path, env=no_credentials)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert refused.stderr.strip().splitlines()[-1] == (
            f"error: --mlflow-uri {url}: the tracking server answers, but it asks for "
            "credentials (HTTP 401); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
            "(or MLFLOW_TRACKING_TOKEN) to an account of that server")
        wrong = run_cli(*SEARCH, "--mlflow-uri", url, "--storage", str(storage), cwd=tmp_path,
                        env={**no_credentials, "MLFLOW_TRACKING_USERNAME": "admin",
                             "MLFLOW_TRACKING_PASSWORD": "not-the-password"})
        assert wrong.returncode == 2, wrong.stderr[-3000:]
        assert wrong.stderr.strip().splitlines()[-1] == (
            f"error: --mlflow-uri {url}: the tracking server answers, but it does not accept "
            "the credentials given (HTTP 401); check MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")
        assert not storage.exists() and "Traceback" not in refused.stderr + wrong.stderr

        admin = {**no_credentials, "MLFLOW_TRACKING_USERNAME": "admin",
                 "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
        result = run_cli(*SEARCH, "--mlflow-uri", url, "--storage", str(storage),
                         cwd=tmp_path, env=admin)
        assert result.returncode == 0, result.stderr[-3000:]
        with pytest.MonkeyPatch.context() as patch:
            for key, value in admin.items():
                if value is not None:
                    patch.setenv(key, value)
            client = MlflowClient(url)
            runs = client.search_runs([client.get_experiment_by_name("team").experiment_id])
    finally:
        stop_tree(server)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3  # the parent, two trials
