"""A synthetic set too large for this machine is refused before any work: a slip of a digit in
``--samples`` used to simulate for hours before it ran out of memory or disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from common.errors import DataError
from datasets import get_dataset
from datasets.base import available_memory, cache_dir
from tests.conftest import run_cli

SYNTHETIC = ["xrd", "calo", "larcv", "multimodal", "watchmal"]
XRD_ROW_BYTES = 2048 * 4 + 8  # the default grid's float32 pattern and its int64 label
XRD_MEMORY_FACTOR = 5.0  # the XRD generator's measured peak (datasets/xrd.py)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.parametrize("name", SYNTHETIC)
def test_a_set_no_disk_holds_is_refused_before_it_is_simulated(name):
    cache = cache_dir()
    before = files_under(cache)
    with pytest.raises(DataError, match=r"^--samples 10000000000000: the synthetic set "
                                        r"\(\d+ bytes a sample\) needs .* on disk .*; lower "
                                        r"--samples to at most \d+, or point SCITUNE_CACHE at"):
        get_dataset(name).prepare(None, 10**13, 0, {})
    assert files_under(cache) == before


def test_the_cli_names_the_largest_samples_that_fit_and_creates_nothing(tmp_path):
    result = run_cli("--space", "resnet1d", "--samples", str(10**13), "--experiment", "big",
                     "--storage", str(tmp_path / "ray"), "--mlflow-uri",
                     f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --samples 10000000000000: the synthetic set") and \
        "lower --samples to at most" in line, line
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []


def test_a_set_memory_cannot_hold_while_it_is_generated_names_memory():
    """Sized from this machine: fits the cache's disk twice over, not memory."""
    free_disk = shutil.disk_usage(cache_dir()).free
    samples = int(1.5 * available_memory() / (XRD_MEMORY_FACTOR * XRD_ROW_BYTES))
    if samples * XRD_ROW_BYTES * 2 > free_disk:
        pytest.skip("the cache's disk is smaller than this machine's memory")
    with pytest.raises(DataError) as refused:
        get_dataset("xrd").prepare(None, samples, 0, {})
    message = str(refused.value)
    assert "of memory to generate it" in message and "on disk" not in message, message
    fits = int(message.split("lower --samples to at most ")[1].split()[0])
    assert samples / 2 < fits < samples  # the largest set memory holds, with the peak counted


def test_a_cache_on_a_small_disk_refuses_what_it_cannot_hold_and_takes_what_it_can(
        small_disk, monkeypatch):
    """A real 30 MB file system as SCITUNE_CACHE: 5000 patterns (41 MB) are refused naming the
    disk, 300 (2.5 MB) are generated."""
    monkeypatch.setenv("SCITUNE_CACHE", str(small_disk))
    xrd = get_dataset("xrd")
    with pytest.raises(DataError, match=rf"needs 41.0 MB on disk \(2\d.\d MB free in "
                                        rf"{small_disk}/datasets\); lower --samples to at most "
                                        r"3\d\d\d, or point SCITUNE_CACHE at a larger disk$"):
        xrd.prepare(None, 5000, 0, {})
    assert os.listdir(small_disk / "datasets") == []
    assert Path(xrd.prepare(None, 300, 0, {})).stat().st_size > 300 * XRD_ROW_BYTES


def test_samples_too_large_to_fit_even_the_fewest_name_the_option_not_a_smaller_count():
    """``--data-option length=100000000``: 400 MB a pattern; no --samples the xrd set takes
    (at least 42) fits, so the fix is the option, not a count below the minimum."""
    with pytest.raises(DataError, match=r"\(400000008 bytes a sample\) needs .*; not even the 42 "
                                        r"samples it needs fit: make each smaller "
                                        r"\(--data-option\)"):
        get_dataset("xrd").prepare(None, 4000, 0, {"length": "100000000"})
