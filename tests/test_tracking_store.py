"""A new SQLite tracking store is created whole or not at all (a driver killed while MLflow
migrates a fresh database must not leave a store every later start fails on)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tracking.store import ensure_sqlite_store

CREATE = """
import sys
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # imported before the clock
from tracking.store import ensure_sqlite_store
print("start", flush=True)
ensure_sqlite_store(sys.argv[1])
print("done", flush=True)
"""


def usable(db) -> bool:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment_id = client.create_experiment(f"probe-{time.time_ns()}")
    return client.get_experiment(experiment_id) is not None


def test_store_is_created_once_and_whole(tmp_path):
    db = tmp_path / "mlflow.db"
    ensure_sqlite_store(f"sqlite:///{db}")
    assert db.exists() and usable(db)
    assert not list(tmp_path.glob(".mlflow.db.partial-*"))
    before = db.stat().st_mtime_ns, db.stat().st_size
    ensure_sqlite_store(f"sqlite:///{db}")  # an existing store is left as it is
    assert (db.stat().st_mtime_ns, db.stat().st_size) == before
    ensure_sqlite_store("http://127.0.0.1:9")  # not SQLite: nothing to do, nothing contacted


def test_partial_files_of_dead_processes_are_removed(tmp_path):
    finished = subprocess.run(["true"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".mlflow.db.partial-{dead.pid}"
    stale.write_bytes(b"half a schema")
    assert finished.returncode == 0
    ensure_sqlite_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not stale.exists() and usable(tmp_path / "mlflow.db")


@pytest.mark.slow  # ~10 s of repeated kills; keeps the default suite under 10 minutes
def test_a_kill_during_creation_leaves_no_store_or_a_whole_one(tmp_path):
    rng = random.Random(7)
    outcomes = []
    for attempt in range(4):
        db = tmp_path / f"attempt{attempt}" / "mlflow.db"
        db.parent.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", CREATE, f"sqlite:///{db}"], cwd=REPO,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "start"
        time.sleep(rng.uniform(0.0, 0.8))  # inside MLflow's migrations (about a second)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        outcomes.append(db.exists())
        # whatever the kill left, the next start works
        ensure_sqlite_store(f"sqlite:///{db}")
        assert usable(db), f"attempt {attempt}: the store is unusable after a kill"
        assert not list(db.parent.glob(".mlflow.db.partial-*"))
    assert outcomes.count(False) >= 1, "no kill landed before the store was complete"


def test_a_database_password_is_never_printed():
    from tracking.store import shown_uri

    assert shown_uri("postgresql://me:p@ss:w0rd@db.example:5432/mlflow") == \
        "postgresql://me:***@db.example:5432/mlflow"
    assert shown_uri("postgresql+psycopg2://me:secret@host/db") == "postgresql+psycopg2://me:***@host/db"
    for uri in ("postgresql://me@host/db", "http://127.0.0.1:5000", "sqlite:////tmp/x@y:z/m.db"):
        assert shown_uri(uri) == uri


@pytest.mark.parametrize("uri", ["mysql+pymysql://me:s3cret@127.0.0.1:9/mlflow", "databricks"])
def test_a_store_mlflow_cannot_use_is_one_line_before_any_work(uri, monkeypatch):
    """MySQL without its driver (or with the server down) and Databricks without credentials
    gave a traceback after Ray's folder was made; now the store is asked first."""
    from common.errors import BadInput
    from tracking.store import resolve_mlflow_uri

    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", "/nonexistent/databrickscfg")
    with pytest.raises(BadInput) as refused:
        resolve_mlflow_uri(uri)
    message = str(refused.value)
    assert "MLflow cannot use this store" in message and "\n" not in message, message
    assert "s3cret" not in message
