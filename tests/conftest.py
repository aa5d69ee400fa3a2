"""Shared fixtures: an isolated data cache, tiny prepared data sets, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated data goes to a per-session cache, never the user's."""
    cache = tmp_path_factory.mktemp("scitune-cache")
    os.environ["SCITUNE_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_data():
    """``tiny_data(dataset_name) -> DataSplits`` of a small synthetic set (cached per name)."""
    from datasets import get_dataset

    made = {}

    def make(name: str):
        if name not in made:
            from search.stages import prepare_data  # resolves earlier stages (ae_codes: an ae)

            path = prepare_data(name, None, 64, 0, {})
            made[name] = get_dataset(name).load(path, 0, {})
        return made[name]

    return make


def kill_tree(pid: int) -> None:
    """SIGKILL a driver, then the Ray processes it started (by pid, nothing else)."""
    import signal

    import psutil

    proc = psutil.Process(pid)
    descendants = proc.children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs([proc, *descendants], timeout=30)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600,
            env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """Run ``launch.py`` in a subprocess as a user would. One that outlives ``timeout`` is
    asked for every thread's stack (SIGUSR2, see cli.main) before it and its Ray processes
    are killed, and the failure shows where it stood. ``env`` adds to this process's
    environment; a None value removes that variable."""

    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    command = [sys.executable, str(REPO / "launch.py"), *args]
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=full_env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(stack_dump_then_kill(proc, args, f"ran over {timeout:.0f} s")
                             ) from None
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def stack_dump_then_kill(proc: subprocess.Popen, args: tuple[str, ...] | list[str],
                         why: str) -> str:
    """Ask a running ``launch.py`` (stdout and stderr piped) for every thread's stack
    (SIGUSR2, see cli.main), kill it and its Ray processes, and return what it printed."""
    import signal

    proc.send_signal(signal.SIGUSR2)
    time.sleep(2)
    state = "still running" if proc.poll() is None else f"exited {proc.returncode}"
    kill_tree(proc.pid)
    stdout, stderr = proc.communicate()
    return (f"launch.py {' '.join(args)} {why} ({state} after the stack dump); its output "
            f"ends:\n{stdout[-2000:]}\nand its threads stood at:\n{stderr[-8000:]}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_tree(proc: subprocess.Popen) -> None:
    """SIGTERM a process this suite started and its children (by pid), SIGKILL stragglers."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def start_mlflow_server(root: Path, port: int | None = None, *extra: str,
                        env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` on 127.0.0.1 (SQLite store ``root/mlflow.db``, proxied artifacts
    in ``root/artifacts``, log appended to ``root/server.log``; ``extra`` flags and ``env``
    added) and wait until it answers.
    Returns the process (stop it with :func:`stop_tree`) and its URL."""
    import urllib.request

    port = port or free_port()
    with open(root / "server.log", "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *extra],
            cwd=root, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_tree(proc)
            tail = (root / "server.log").read_text()[-2000:]
            raise RuntimeError(f"mlflow server did not start: {tail}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite store, proxied artifacts), stopped by pid
    at the end of the session. Yields its URL."""
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield url
    finally:
        stop_tree(proc)


@pytest.fixture(scope="session")
def finished_search(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str):
    """One small finished ``resnet1d`` search logged to the MLflow server, shared by the
    report / compare / export / retrain tests (a namespace: cwd, storage, experiment, uri)."""
    from types import SimpleNamespace

    cwd = tmp_path_factory.mktemp("finished-search")
    name = "small"
    (cwd / "narrow.yaml").write_text(SPACE_FILE)
    result = run_cli("--space", "resnet1d", "--trials", "4", "--max-epochs", "3",
                     "--samples", "400", "--experiment", name, "--mlflow-uri", mlflow_server,
                     "--space-file", "narrow.yaml", "--export-best", "best.yaml", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return SimpleNamespace(cwd=cwd, storage=cwd / "ray_results", experiment=name,
                           uri=mlflow_server, stdout=result.stdout, space_file=cwd / "narrow.yaml",
                           best=cwd / "best.yaml")


#: The narrowed ``resnet1d`` space of the shared finished search (small, fast models).
SPACE_FILE = """\
space: resnet1d
params:
  n_stages: 2                          # fixed
  lr: {low: 1e-3, high: 3.0e-3}        # narrowed (log scale kept); 1e-3 read as a string
  batch_size: {choices: [32, 64]}      # changed choices
  dropout: {low: 0.0, high: 0.2, step: 0.1}
"""


@pytest.fixture
def small_disk(tmp_path):
    """A 30 MB file system (tmpfs, needs root's mount), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30M", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({made.stderr.strip()[:100]})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
