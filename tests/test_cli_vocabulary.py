"""One vocabulary: every sub-command that reads a finished search takes --experiment,
--storage and --mlflow-uri, as the search itself does, and its --help lists them."""

from __future__ import annotations

import re

import pytest

from cli.main import READS_A_SEARCH, SUBCOMMANDS
from tests.conftest import run_cli

SEARCH_FLAGS = ("--experiment", "--storage", "--mlflow-uri")


@pytest.mark.parametrize("command", [None, *READS_A_SEARCH])
def test_help_lists_the_search_flags(command, tmp_path):
    result = run_cli(*([command] if command else []), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert command is None or command in SUBCOMMANDS
    listed = set(re.findall(r"(?m)^\s+(--[a-z-]+)", result.stdout))
    missing = [flag for flag in SEARCH_FLAGS if flag not in listed]
    assert not missing, f"launch.py {command or ''} --help lacks {missing}"


@pytest.mark.parametrize("command", ["report", "blackout"])
def test_the_recorded_store_can_be_overridden_and_a_missing_one_is_refused(command, tmp_path):
    """--mlflow-uri is read (before any other work): a store that is not there is one line."""
    result = run_cli(command, "--experiment", "x", "--storage", str(tmp_path), "--mlflow-uri",
                     f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--mlflow-uri" in lines[0], result.stderr


@pytest.mark.parametrize("argv, name", [
    (["train", "--config", ""], "--config"),  # was "--config .: cannot read it"
    (["compare", "first", ""], "NAME"),
    (["convert", "", "--space", "resnet1d", "--out", "x.h5"], "SRC"),  # was "--data : no such"
    (["convert", "src.h5", "--space", "resnet1d", "--out", ""], "--out"),  # "--out .: exists"
    (["report", "--experiment", "x", "--storage", ""], "--storage"),  # read the current folder
    (["--export-best", "", "--trials", "1"], "--export-best"),  # ran a search, exported nothing
])
def test_an_empty_value_is_refused_by_every_command(argv, name, tmp_path):
    """``--flag "$VAR"`` with VAR unset: one line naming the flag, exit 2, nothing written."""
    result = run_cli(*argv, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: argument {name}: empty value; give "
                                                   "one"), lines
    assert list(tmp_path.iterdir()) == []
