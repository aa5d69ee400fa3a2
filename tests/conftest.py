"""Shared fixtures: an isolated data cache, tiny prepared data sets, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
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
            spec = get_dataset(name)
            path = spec.prepare(None, 64, 0, {})
            made[name] = spec.load(path, 0, {})
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
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``launch.py`` in a subprocess as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(REPO / "launch.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)
