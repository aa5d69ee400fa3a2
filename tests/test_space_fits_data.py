"""A space's model is checked against the data before Ray starts: data of a shape the model
cannot take (``dcgan``'s 40 × 40 events given barrel-only 16 × 40 files) exit 2 with one line
naming the file, instead of failing inside every trial; every space takes its own default
data (the check never refuses what trains)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from common.errors import DataError
from datasets import get_dataset
from search.stages import check_space_fits_data, prepare_data
from search_spaces import registry

REPO = Path(__file__).resolve().parents[1]


def barrel_only(tmp_path: Path, events: int = 40) -> Path:
    """A WatChMaL image file of the barrel only: (N, 16, 40, 38)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "barrel.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("event_data", data=rng.random((events, 16, 40, 38), dtype=np.float32))
        f.create_dataset("labels", data=np.arange(events) % 3)
    return path


@pytest.mark.parametrize("name", sorted(registry()))
def test_every_space_takes_its_default_data(name, tiny_data):
    space = registry()[name]
    check_space_fits_data(space, tiny_data(space.dataset), "(default)")


def test_a_shape_the_model_refuses_is_a_data_error(tmp_path):
    path = str(barrel_only(tmp_path))
    data = get_dataset("watchmal").load(prepare_data(registry()["dcgan"], path, 40, 0, {}), 0, {})
    with pytest.raises(DataError, match=rf"--data {path}: space 'dcgan' cannot take these "
                                        r"data \(inputs 38×16×40\).*40×40"):
        check_space_fits_data(registry()["dcgan"], data, path)
    check_space_fits_data(registry()["resnet18"], data, path)  # the classifier takes them


def test_the_search_refuses_it_before_ray_starts(tmp_path):
    path = barrel_only(tmp_path)
    done = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "--space", "dcgan", "--data", str(path),
         "--trials", "1", "--storage", str(tmp_path / "ray"),
         "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "SCITUNE_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot take these data" in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


def test_an_incomplete_seed_configuration_skips_the_check(tiny_data):
    """A space whose seed configuration cannot build its model (a plugin's partial one, or
    none) says nothing about the data: the search goes on, as it did before the check."""
    import dataclasses

    space = registry()["resnet1d"]
    data = tiny_data(space.dataset)
    for seed_config in ({"lr": 1e-3}, {}):
        check_space_fits_data(dataclasses.replace(space, seed_config=seed_config), data, "x")


def test_integer_counts_are_taken_as_the_loop_feeds_them(tmp_path):
    """Detector counts stored as integers (an int32 XRD pattern file): the loop feeds every
    input as float32, so the check must too (it refused them: "Input type (int) and bias type
    (float) should be the same"), and a seed epoch trains on them."""
    import math

    from trainables.loop import FitSettings, fit

    rng = np.random.default_rng(0)
    path = tmp_path / "counts.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("patterns", data=rng.poisson(50, (80, 256)).astype(np.int32))
        f.create_dataset("labels", data=np.arange(80) % 14)
    space = registry()["resnet1d"]
    data = get_dataset(space.dataset).load(prepare_data(space, str(path), 80, 0, {}), 0, {})
    assert data.arrays["x"].dtype.kind == "i"
    check_space_fits_data(space, data, str(path))
    reports = []
    fit(space, dict(space.seed_config), data, FitSettings(max_epochs=1, seed=0),
        report=lambda metrics, state: reports.append(metrics))
    assert len(reports) == 1 and math.isfinite(reports[0]["val_loss"])


def test_a_group_in_place_of_a_dataset_is_named(tmp_path):
    path = tmp_path / "grouped.h5"
    with h5py.File(path, "w") as f:
        f.create_group("patterns")
        f.create_dataset("labels", data=np.arange(80) % 14)
    with pytest.raises(DataError, match="'patterns' is a group, not a dataset"):
        prepare_data(registry()["resnet1d"], str(path), 80, 0, {})
