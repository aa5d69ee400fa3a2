"""Where a search's books are kept: the MLflow tracking URI and experiment, the tags that tell
a search's runs apart, and the code version recorded with them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from common.errors import BadInput
from common.paths import check_writable_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
#: MLflow tag telling a search's parent run ("search"), its trials ("trial") and retrains
#: of an exported configuration ("train") apart
RUN_KIND_TAG = "scitune.run"
STORAGE_TAG = "scitune.storage"  # the --storage of a search's parent run


def git_commit() -> str:
    """The commit of the code this search runs (``unknown`` outside a git checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def resolve_mlflow_uri(uri: str | None) -> str:
    """Default and absolutise the tracking URI, and check it can be reached (creates nothing)."""
    if uri is None:
        return f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        raw = uri[len("sqlite:///"):]
        db = Path(raw if raw.startswith("/") else Path.cwd() / raw)
        check_writable_dir(db.parent, "--mlflow-uri")
        if not db.parent.exists():
            raise BadInput(f"--mlflow-uri {uri}: folder {db.parent} does not exist; create it")
        return f"sqlite:///{db}"
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BadInput(f"--mlflow-uri {uri}: tracking server unreachable ({reason}); "
                           "start it (mlflow server ...) or fix the URI") from None
        return uri
    if uri.startswith(("postgresql", "mysql", "databricks")):
        return uri
    raise BadInput(f"--mlflow-uri {uri}: use sqlite:////abs/path.db or http://host:port")



def open_mlflow_experiment(tracking_uri: str, name: str) -> str:
    """Get or create the MLflow experiment ``name`` (artifacts beside a SQLite file)."""
    from mlflow.tracking import MlflowClient

    ensure_sqlite_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def ensure_sqlite_store(tracking_uri: str) -> None:
    """Create a new SQLite tracking store atomically.

    MLflow builds a fresh store's schema in dozens of migration steps (about a second); a
    process killed in between leaves a half-built file on which every later start fails
    ("table ... already exists"). Here the schema is built in a temporary file beside the
    target and linked into place only when complete, so the store is either absent or whole.
    Temporary files of dead processes are removed. Other URIs are left to MLflow."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    db = Path(tracking_uri[len("sqlite:///"):])
    for stale in db.parent.glob(f".{db.name}.partial-*"):  # with SQLite's -journal files
        pid = stale.name[len(f".{db.name}.partial-"):].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            stale.unlink(missing_ok=True)
    if db.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    partial = db.with_name(f".{db.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    try:
        store = SqlAlchemyStore(f"sqlite:///{partial}", (db.parent / "mlartifacts").as_uri())
        store.engine.dispose()
        try:
            os.link(partial, db)  # fails if another process created the store meanwhile
        except FileExistsError:
            pass
    finally:
        for leftover in (partial, partial.with_name(partial.name + "-journal")):
            leftover.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
