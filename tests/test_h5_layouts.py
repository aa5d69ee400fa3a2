"""Other people's HDF5 files: layouts that h5py reads but a memory map or torch does not
take as they are (big-endian numbers, external links, virtual datasets, external raw
files). Each either trains on exactly the stored numbers or is refused before Ray starts."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from common.errors import DataError
from datasets import get_dataset
from search.stages import prepare_data
from search_spaces import registry

SPACE = "resnet1d"


def patterns(rows: int = 80, length: int = 256) -> np.ndarray:
    return np.random.default_rng(0).random((rows, length), dtype=np.float32)


def load(path: Path, rows: int = 80):
    space = registry()[SPACE]
    return get_dataset(space.dataset).load(prepare_data(space, str(path), rows, 0, {}), 0, {})


def test_big_endian_numbers_train_as_stored(tmp_path):
    """Big-endian files (some instruments, Java and IDL writers): torch takes native byte
    order only, so every trial failed with "byte order different from the native"."""
    from trainables.loop import FitSettings, fit

    x = patterns()
    path = tmp_path / "big_endian.h5"
    with h5py.File(path, "w") as f:
        f["patterns"] = x.astype(">f4")
        f["labels"] = (np.arange(80) % 14).astype(">i8")
    data = load(path)
    rows = data.batch("x", data.train[:5])
    assert rows.dtype.isnative and np.array_equal(rows, x[data.train[:5]])
    reports = []
    space = registry()[SPACE]
    fit(space, dict(space.seed_config), data, FitSettings(max_epochs=1, seed=0),
        report=lambda metrics, state: reports.append(metrics))
    assert len(reports) == 1 and math.isfinite(reports[0]["val_loss"])


def test_an_external_link_reads_the_linked_files_numbers(tmp_path):
    """A master file whose 'patterns' link to a data file (as detector software writes them):
    the memory map took the linked dataset's offset in the *master* file, which read other
    bytes (or failed where the master file is shorter)."""
    x = patterns()
    (tmp_path / "data").mkdir()
    with h5py.File(tmp_path / "data" / "data_000001.h5", "w") as f:
        f.create_dataset("entry/data", data=x)
    master = tmp_path / "master.h5"
    with h5py.File(master, "w") as f:
        f.create_dataset("padding", data=np.full((400, 256), 7.0, np.float32))
        f["patterns"] = h5py.ExternalLink("data/data_000001.h5", "/entry/data")
        f["labels"] = np.arange(80) % 14
    data = load(master)
    assert np.array_equal(data.batch("x", data.train), x[data.train])
    assert np.array_equal(data.batch("x", data.val), x[data.val])


def test_a_virtual_dataset_reads_its_sources(tmp_path):
    x = patterns()
    for part, rows in enumerate((slice(0, 40), slice(40, 80))):
        with h5py.File(tmp_path / f"run_{part}.h5", "w") as f:
            f["patterns"] = x[rows]
    layout = h5py.VirtualLayout(shape=x.shape, dtype=x.dtype)
    layout[:40] = h5py.VirtualSource("run_0.h5", "patterns", shape=(40, 256))
    layout[40:] = h5py.VirtualSource("run_1.h5", "patterns", shape=(40, 256))
    path = tmp_path / "virtual.h5"
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("patterns", layout)
        f["labels"] = np.arange(80) % 14
    data = load(path)
    assert np.array_equal(data.batch("x", data.train), x[data.train])
    (tmp_path / "run_1.h5").unlink()  # HDF5 would read zeros for its rows, silently
    with pytest.raises(DataError, match="virtual dataset 'patterns' maps run_1.h5, which does "
                                        "not exist"):
        load(path)


def test_dangling_links_and_external_raw_files_are_named(tmp_path):
    soft = tmp_path / "soft.h5"
    with h5py.File(soft, "w") as f:
        f["labels"] = np.arange(80) % 14
        f["patterns"] = h5py.SoftLink("/entry/patterns")
    with pytest.raises(DataError, match="'patterns' is a soft link to /entry/patterns, which "
                                        "cannot be opened"):
        load(soft)
    x = patterns()
    x.tofile(tmp_path / "raw.bin")
    raw = tmp_path / "raw.h5"
    with h5py.File(raw, "w") as f:
        f.create_dataset("patterns", shape=x.shape, dtype=x.dtype,
                         external=[("raw.bin", 0, x.nbytes)])
        f["labels"] = np.arange(80) % 14
    with pytest.raises(DataError, match=r"keeps its numbers in external raw files \(raw.bin\)"):
        load(raw)
