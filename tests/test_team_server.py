"""The team tracking server of deploy/team-server, for real: a PostgreSQL server started here
(initdb + postgres on 127.0.0.1), the role and database made by ``create_db.sh``, ``mlflow
server`` started by ``start_server.sh`` on it, and searches through the CLI that write to it
(through the server, killed and resumed; and straight into PostgreSQL). No mocks."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, free_port, kill_tree, run_cli, stop_tree
from tests.test_e2e import assert_exactly_once
from tracking.state import state_path

pytestmark = pytest.mark.slow

DEPLOY = REPO / "deploy" / "team-server"
SUPERUSER = "postgres"
#: passwords with characters a URI must escape, so the escaping is tested too
SERVER_PASSWORD = "team pw:1"
DIRECT_PASSWORD = "p@ss/w:rd"
SEARCH = ["--space", "resnet1d", "--max-epochs", "3", "--samples", "600",
          "--scheduler", "fifo", "--concurrency", "2"]


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's programs (initdb, postgres, psql, pg_isready), if installed."""
    found = shutil.which("initdb")
    candidates = [str(Path(found).resolve().parent)] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if all((Path(folder) / tool).is_file()
               for tool in ("initdb", "postgres", "psql", "pg_isready")):
            return Path(folder)
    return None


def wait_for(check, what: str, proc: subprocess.Popen, log: Path, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start (exit {proc.poll()}): {tail}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own in a temporary folder, on 127.0.0.1 and a free port
    (password logins over TCP, the superuser over the folder's Unix socket); stopped by pid."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb/postgres/psql are not installed "
                    "(deploy/system_packages.sh installs them with apt-get)")
    # PostgreSQL refuses to run as root: then its programs run as the 'postgres' user, and
    # its folder is one that user owns (pytest's tmp_path is private to root)
    as_user = {}
    if os.geteuid() == 0:
        import pwd

        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        as_user = {"user": account.pw_uid, "group": account.pw_gid}
    root = Path(tempfile.mkdtemp(prefix="scitune-pg-"))
    if as_user:
        os.chown(root, as_user["user"], as_user["group"])
    data = root / "data"
    (root / "superuser.pw").write_text("unused-superuser-pw\n")
    if as_user:
        os.chown(root / "superuser.pw", as_user["user"], as_user["group"])
    subprocess.run([bin_dir / "initdb", "-D", data, "-U", SUPERUSER, "-E", "UTF8",
                    "--auth-local=trust", "--auth-host=scram-sha-256",
                    f"--pwfile={root / 'superuser.pw'}"],
                   check=True, capture_output=True, cwd=root, timeout=120, **as_user)
    port = free_port()
    log = root / "postgres.log"
    with open(log, "w") as out:  # opened here, written through the inherited descriptor
        proc = subprocess.Popen(
            [bin_dir / "postgres", "-D", data, "-p", str(port), "-h", "127.0.0.1",
             "-k", root, "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=out, stderr=subprocess.STDOUT, cwd=root, **as_user)
    env = dict(os.environ, PGHOST=str(root), PGPORT=str(port), PGUSER=SUPERUSER,
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    try:
        wait_for(lambda: subprocess.run([bin_dir / "pg_isready", "-q"], env=env).returncode == 0,
                 "postgres", proc, log, timeout=60)
        yield SimpleNamespace(port=port, env=env, root=root, bin=bin_dir, proc=proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def create_db(postgres, user: str, db: str, password: str) -> subprocess.CompletedProcess:
    env = dict(postgres.env, MLFLOW_DB_USER=user, MLFLOW_DB_NAME=db,
               MLFLOW_DB_PASSWORD=password)
    return subprocess.run(["bash", str(DEPLOY / "create_db.sh")], env=env, capture_output=True,
                          text=True, timeout=120)


def psql(postgres, db: str, sql: str) -> str:
    """One query as the superuser, its rows as psql's unaligned text."""
    out = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
                         env=postgres.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def team_server(postgres, tmp_path_factory):
    """``create_db.sh`` (twice: it is idempotent) and ``start_server.sh``, as the README says;
    the server stopped by pid at the end. Yields its URL and artifact folder."""
    for _ in range(2):
        made = create_db(postgres, "mlflow", "mlflow", SERVER_PASSWORD)
        assert made.returncode == 0, made.stderr
    assert psql(postgres, "postgres",
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mlflow'"
                ) == "mlflow"
    root = tmp_path_factory.mktemp("team-server")
    port = free_port()
    env = dict(os.environ, MLFLOW_ARTIFACTS_DIR=str(root / "artifacts"),
               MLFLOW_HOST="127.0.0.1", MLFLOW_PORT=str(port), MLFLOW_WORKERS="1",
               MLFLOW_DB_HOST="127.0.0.1", MLFLOW_DB_PORT=str(postgres.port),
               PGPASSWORD=SERVER_PASSWORD, MLFLOW=str(Path(sys.executable).parent / "mlflow"))
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(DEPLOY / "start_server.sh")], cwd=root,
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, "mlflow server", proc, log)
        # the password reaches the server through libpq's PGPASSWORD only
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "--backend-store-uri postgresql+psycopg2://mlflow@127.0.0.1:" in cmdline, cmdline
        assert SERVER_PASSWORD not in cmdline and SERVER_PASSWORD not in log.read_text()
        yield SimpleNamespace(url=url, artifacts=root / "artifacts", log=log)
    finally:
        stop_tree(proc)


def runs_of(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment} in {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, exp, parents, children


def test_search_through_the_team_server_survives_a_driver_kill(team_server, postgres,
                                                                tmp_path):
    storage = tmp_path / "ray"
    args = [*SEARCH, "--trials", "5", "--experiment", "team", "--mlflow-uri", team_server.url,
            "--storage", str(storage)]
    driver = subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dict(os.environ))
    state_file = state_path(storage, "team")
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

    result = run_cli("--resume", "--experiment", "team", "--storage", str(storage),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"MLflow: {team_server.url} " in result.stdout

    client, exp, parents, children = runs_of(team_server.url, "team")
    assert_exactly_once(client, parents, children, trials=5, max_epochs=3)
    after = json.loads(state_file.read_text())["trials"]
    for trial_id, run_id in finished_before.items():
        assert after[trial_id]["run_id"] == run_id  # reused, not re-run
    parent = parents[0]
    assert parent.info.status == "FINISHED"

    # artifacts: stored by the server under its --artifacts-destination, read back over HTTP
    assert exp.artifact_location.startswith("mlflow-artifacts:")
    assert {"best_config.json", "best_checkpoint.pt"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    (tmp_path / "download").mkdir()
    best = json.loads(Path(client.download_artifacts(parent.info.run_id, "best_config.json",
                                                     str(tmp_path / "download"))).read_text())
    assert best["space"] == "resnet1d" and best["config"]
    on_disk = list(team_server.artifacts.glob(
        f"{exp.experiment_id}/{parent.info.run_id}/artifacts/best_config.json"))
    assert len(on_disk) == 1 and json.loads(on_disk[0].read_text()) == best
    # trial figures (figures/epoch_NNN/ of the runs whose checkpoints had some) too
    assert any(a.path == "figures" for child in children
               for a in client.list_artifacts(child.info.run_id))

    # the runs are rows of the PostgreSQL database the server was started on
    rows = psql(postgres, "mlflow",
                "SELECT r.status, count(*) FROM runs r JOIN experiments e "
                "ON e.experiment_id = r.experiment_id WHERE e.name = 'team' "
                "AND r.lifecycle_stage = 'active' GROUP BY r.status")
    assert rows == "FINISHED|6", rows  # the parent run and 5 trial runs


def test_search_straight_into_postgresql(postgres, tmp_path, monkeypatch):
    made = create_db(postgres, "direct", "scitune_direct", DIRECT_PASSWORD)
    assert made.returncode == 0, made.stderr
    uri = (f"postgresql://direct:{quote(DIRECT_PASSWORD, safe='')}@127.0.0.1:{postgres.port}"
           "/scitune_direct")
    no_password = {"PGPASSWORD": None, "PGPASSFILE": str(tmp_path / "no-pgpass")}
    result = run_cli(*SEARCH, "--trials", "4", "--experiment", "direct", "--mlflow-uri", uri,
                     "--storage", str(tmp_path / "ray"), "--export-best",
                     str(tmp_path / "best.yaml"), cwd=tmp_path, env=no_password)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trials 4/4 done" in result.stdout

    # the password reaches the database, never a file or the output
    stored = json.loads(state_path(tmp_path / "ray", "direct").read_text())["tracking_uri"]
    assert stored == f"postgresql+psycopg2://direct@127.0.0.1:{postgres.port}/scitune_direct"
    written = [state_path(tmp_path / "ray", "direct"), tmp_path / "ray" / "direct" / "tuner.pkl",
               tmp_path / "best.yaml"]
    for secret in (DIRECT_PASSWORD, quote(DIRECT_PASSWORD, safe="")):
        assert secret not in result.stdout + result.stderr
        for path in written:
            assert secret.encode() not in path.read_bytes(), path
    assert stored.encode() in written[1].read_bytes()  # what Ray keeps is the URI without it
    # reading the search again needs the password again: one line without it, then PGPASSWORD
    report = ["report", "--experiment", "direct", "--storage", str(tmp_path / "ray")]
    resume = ["--resume", "--experiment", "direct", "--storage", str(tmp_path / "ray")]
    for command in (report, resume):
        refused = run_cli(*command, cwd=tmp_path, env=no_password)
        assert refused.returncode == 2, (command, refused.stderr[-2000:])
        assert "no password supplied" in refused.stderr and "PGPASSWORD" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    read = run_cli(*report, cwd=tmp_path, env={**no_password, "PGPASSWORD": DIRECT_PASSWORD})
    assert read.returncode == 0, read.stderr[-2000:]
    monkeypatch.setenv("PGPASSWORD", DIRECT_PASSWORD)  # runs_of below connects from here
    client, exp, parents, children = runs_of(stored, "direct")
    assert_exactly_once(client, parents, children, trials=4, max_epochs=3)
    assert parents[0].info.status == "FINISHED"
    rows = psql(postgres, "scitune_direct",
                "SELECT count(*) FROM runs r JOIN experiments e "
                "ON e.experiment_id = r.experiment_id WHERE e.name = 'direct' "
                "AND r.status = 'FINISHED'")
    assert rows == "5", rows
    # without a server, MLflow puts the experiment's artifacts in ./mlruns of the driver
    assert exp.artifact_location == str(tmp_path / "mlruns" / exp.experiment_id)
    assert (tmp_path / "mlruns" / exp.experiment_id / parents[0].info.run_id / "artifacts"
            / "best_config.json").is_file()


def test_unreachable_or_refused_postgresql_is_one_line_exit_2(postgres, tmp_path):
    for uri, reason in [
        (f"postgresql://direct:wrong@127.0.0.1:{postgres.port}/scitune_direct",
         "password authentication failed"),
        (f"postgresql://nobody:pw@127.0.0.1:{free_port()}/mlflow", "Connection refused"),
    ]:
        result = run_cli(*SEARCH, "--trials", "4", "--experiment", "refused", "--mlflow-uri", uri,
                         "--storage", str(tmp_path / "ray"), cwd=tmp_path, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert reason in result.stderr and "Traceback" not in result.stderr
        assert ":wrong@" not in result.stderr and ":pw@" not in result.stderr  # hidden
    assert not (tmp_path / "ray").exists()


def test_a_team_server_whose_database_fails_is_refused_in_one_line(team_server, postgres,
                                                                   tmp_path):
    """A running team server whose PostgreSQL fails behind it: its /health still answers.
    First a damaged database (a table renamed away: the API answers HTTP 500 at once), then
    PostgreSQL stopped (the server answers each read with 500 only after about 100 s of its
    own retries). A search waited about four minutes in silence and then blamed the URI; it
    is refused in one line naming the server's store. The last test of this module: it stops
    the module's PostgreSQL."""

    def search() -> tuple[list[str], float]:
        started = time.monotonic()
        result = run_cli(*SEARCH, "--trials", "4", "--experiment", "store-down",
                         "--mlflow-uri", team_server.url, "--storage", str(tmp_path / "ray"),
                         cwd=tmp_path, timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "(its --backend-store-uri database) may be down" in lines[0], lines[0]
        assert not (tmp_path / "ray").exists()
        return lines, time.monotonic() - started

    psql(postgres, "mlflow", "ALTER TABLE experiments RENAME TO experiments_away")
    try:
        lines, took = search()
        # HTTP 500, or 400 with the database's error once the server has served requests
        assert "the tracking server answers, but its API fails (HTTP " in lines[0], lines
        assert "experiments" in lines[0], lines  # the database's own words
        assert took < 60, took
    finally:
        psql(postgres, "mlflow", "ALTER TABLE experiments_away RENAME TO experiments")

    postgres.proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown, by pid
    postgres.proc.wait(timeout=60)
    with urllib.request.urlopen(team_server.url + "/health", timeout=5) as response:
        assert response.status == 200
    lines, took = search()
    # the server answers 500 at once or after its own retries, by the state of its pool
    assert ("answers its health check, but a read took longer than 25 s, 2 times" in lines[0]
            or "the tracking server answers, but its API fails (HTTP 5" in lines[0]), lines
    assert "<" not in lines[0], lines  # no HTML error page in the line
    assert took < 90, took  # MLflow's own retries took about 240 s
