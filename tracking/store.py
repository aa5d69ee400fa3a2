"""Where a search's books are kept: the MLflow tracking URI and experiment, the tags that tell
a search's runs apart, and the code version recorded with them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

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
        check_sqlite_store(db, uri)
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
        check_server_access(uri)
        return uri
    if uri.startswith("postgresql"):
        return _checked_postgresql_uri(uri)
    if uri.startswith(("mysql", "databricks")):
        return _checked_other_store(uri)
    raise BadInput(f"--mlflow-uri {uri}: use sqlite:////abs/path.db or http://host:port")


def _checked_other_store(uri: str) -> str:
    """A MySQL or Databricks store is asked for one experiment before any work: a missing
    driver, a wrong password or absent credentials is then one line, not a traceback after
    Ray's folder was made."""
    import logging

    from mlflow.tracking import MlflowClient

    shown = shown_uri(uri)
    credentials, at, _ = uri.partition("://")[2].rpartition("@")
    password = credentials.partition(":")[2] if at else ""
    quiet = logging.getLogger("mlflow")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its own warnings would say the same at length
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - drivers, SDKs and servers raise many types
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if password:
            reason = reason.replace(password, "***")
        raise BadInput(f"--mlflow-uri {shown}: MLflow cannot use this store "
                       f"({type(exc).__name__}: {reason}); check its address, driver and "
                       "credentials") from None
    finally:
        quiet.setLevel(level)
    return uri


def check_sqlite_store(db: Path, uri: str) -> None:
    """An existing ``db`` must be a readable SQLite file that is empty or an MLflow store
    (read-only check): MLflow would fail on a damaged one with a traceback, and would write its
    schema into someone else's database."""
    import sqlite3

    if not db.exists() or (db.is_file() and db.stat().st_size == 0):
        return
    if not db.is_file():
        raise BadInput(f"--mlflow-uri {uri}: {db} is not a file; name the SQLite file")
    try:
        connection = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            tables = {row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise BadInput(f"--mlflow-uri {uri}: the file is not a usable SQLite database ({exc}); "
                       "restore it from a copy or choose another file") from None
    if tables and not {"experiments", "runs", "alembic_version"} <= tables:
        raise BadInput(f"--mlflow-uri {uri}: a SQLite database that is not an MLflow store "
                       f"(tables: {', '.join(sorted(tables)[:5])}); choose another file")


def _checked_postgresql_uri(uri: str) -> str:
    """Name the installed driver in a ``postgresql://`` URI and check the database answers.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; the project extra ``team``
    installs psycopg2, so a bare URI is given the driver that is installed (psycopg 3
    first). The password is never shown in a message, nor kept: for libpq's drivers it moves
    into this process's ``PGPASSWORD`` and the URI returned (which the search records in its
    state, Ray's ``tuner.pkl`` and exported files) has none; a later ``--resume``, ``report``
    or ``compare`` finds it in ``PGPASSWORD``, ``~/.pgpass`` or a ``--mlflow-uri`` with it."""
    import importlib.util

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
    except ArgumentError as exc:
        raise BadInput(f"--mlflow-uri: not a database URI ({exc})") from None
    shown = url.render_as_string(hide_password=True)
    if url.drivername == "postgresql":
        driver = next((d for d in ("psycopg", "psycopg2")
                       if importlib.util.find_spec(d) is not None), None)
        if driver is None:
            raise BadInput(f"--mlflow-uri {shown}: no PostgreSQL driver is installed; "
                           "pip install -e '.[team]'")
        url = url.set(drivername=f"postgresql+{driver}")
        uri = f"postgresql+{driver}://{uri.partition('://')[2]}"  # the rest as the user wrote it
    else:  # postgresql+DRIVER://: libpq's drivers are checked, others left to SQLAlchemy
        driver = url.drivername.partition("+")[2]
        if driver not in ("psycopg", "psycopg2"):
            return uri
        if importlib.util.find_spec(driver) is None:
            raise BadInput(f"--mlflow-uri {shown}: driver {driver!r} is not installed; "
                           "pip install -e '.[team]' (psycopg2) or use postgresql://")
    if url.password is not None:  # libpq reads PGPASSWORD where the URI names none
        os.environ["PGPASSWORD"] = str(url.password)
        url = url._replace(password=None)  # URL.set takes None as "unchanged"
        uri = url.render_as_string(hide_password=False)
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool,
                                      connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        fix = ("give the role's password (in --mlflow-uri, PGPASSWORD or ~/.pgpass; a "
               "search does not store it)" if "password" in reason else
               "start it, create the role and database (deploy/team-server/create_db.sh) "
               "or fix the URI")
        raise BadInput(f"--mlflow-uri {shown}: database unreachable ({reason}); {fix}") from None
    finally:
        engine.dispose()
    return uri


#: the read that checks a tracking server before any work: seconds to wait, attempts
READ_CHECK_TIMEOUT_S = 25
READ_CHECK_ATTEMPTS = 2
#: an API error message that comes from the server's database, not from the request
STORE_ERROR = re.compile(r"psycopg|sqlalchemy|sqlite3|pymysql|OperationalError|"
                         r"ProgrammingError|UndefinedTable|IntegrityError", re.IGNORECASE)


def check_server_access(uri: str) -> None:
    """Raise :class:`BadInput` if the tracking server at ``uri`` answers, but refuses MLflow's
    client as configured here (an authenticated team server, ``mlflow server --app-name
    basic-auth``, without MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD), or its API
    fails or does not answer in time (HTTP 5xx, or a read that hangs: the server's own
    database is down): checked with one read before any work, tried twice (MLflow's own
    retries waited minutes in silence), so a search does not end in a traceback after its
    data."""
    import time

    import requests
    from mlflow.tracking._tracking_service.utils import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    # a server whose database is down answers a read after MLflow's own retries inside it
    # (about 100 s for PostgreSQL); a healthy one in well under a second
    wait = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or READ_CHECK_TIMEOUT_S)
    response = None
    for attempt in range(READ_CHECK_ATTEMPTS):
        try:
            response = http_request(get_default_host_creds(uri),
                                    "/api/2.0/mlflow/experiments/search", "POST",
                                    json={"max_results": 1}, max_retries=0, timeout=wait,
                                    raise_on_status=False)
        except requests.exceptions.Timeout:
            response = None
        except Exception as exc:  # noqa: BLE001 - any other transport failure: its reason
            raise BadInput(f"--mlflow-uri {uri}: the tracking server answered its health "
                           f"check but not a read ({one_line(exc)}); check the server, or fix "
                           "the URI") from None
        if response is not None and response.status_code < 500:
            break
        if attempt + 1 < READ_CHECK_ATTEMPTS:
            time.sleep(2)
    if response is None:
        raise BadInput(f"--mlflow-uri {uri}: the tracking server answers its health check, but "
                       f"a read took longer than {wait:g} s, {READ_CHECK_ATTEMPTS} times; the "
                       "server's own store (its --backend-store-uri database) may be down or "
                       "overloaded: see the server's log, then run this again "
                       "(MLFLOW_HTTP_REQUEST_TIMEOUT sets the wait)")
    status = response.status_code
    if status == 200:
        return
    if status == 401 and (os.environ.get("MLFLOW_TRACKING_USERNAME")
                          or os.environ.get("MLFLOW_TRACKING_TOKEN")):
        fix = ("it does not accept the credentials given (HTTP 401); check "
               "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
               "MLFLOW_TRACKING_TOKEN)")
    elif status == 401:
        fix = ("it asks for credentials (HTTP 401); set MLFLOW_TRACKING_USERNAME and "
               "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) to an account of that "
               "server")
    elif status == 403:
        fix = ("it refuses this account (HTTP 403); ask the server's administrator for "
               "access, or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to "
               "another account")
    elif status >= 500 or STORE_ERROR.search(api_message(response)):
        # a damaged database answers 400 with the database's own error (a missing table)
        fix = (f"its API fails (HTTP {status}: {api_message(response)}); the server's own "
               "store (its --backend-store-uri database) may be down or full: see the "
               "server's log, then run this again")
    else:
        fix = (f"its API refused a read (HTTP {status}: {api_message(response)}); check that "
               "the URI is an MLflow server's")
    raise BadInput(f"--mlflow-uri {uri}: the tracking server answers, but {fix}")


def one_line(exc: BaseException) -> str:
    """``exc`` as a short line: its type and the first line of its message."""
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def api_message(response: Any) -> str:
    """The ``message`` of an MLflow API error response (else the start of its body)."""
    try:
        text = str(response.json().get("message", ""))
    except ValueError:
        text = response.text
        if text.lstrip().startswith("<"):  # a web server's error page: its title
            title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
            text = title.group(1) if title else "an HTML error page"
    return (text.strip().splitlines() or ["no message"])[0][:160]


def shown_uri(uri: str) -> str:
    """A tracking URI as it may be printed: a database password masked as ``***``."""
    if "://" not in uri or uri.startswith(("sqlite:", "file:")):
        return uri
    scheme, _, rest = uri.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return uri
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


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
