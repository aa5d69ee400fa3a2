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


def test_a_conversion_of_a_links_file_follows_the_linked_files_content(tmp_path):
    """A file of links whose labels are converted into the cache (one-hot rows here): the
    cache entry was keyed by the links file's own bytes, which do not change when the data
    they read does, so the next run trained on the labels of before."""
    x = patterns()
    data_file, master = tmp_path / "data.h5", tmp_path / "master.h5"
    with h5py.File(data_file, "w") as f:
        f["patterns"] = x
        f["labels"] = np.eye(14, dtype=np.float32)[np.arange(80) % 14]
    with h5py.File(master, "w") as f:
        for key in ("patterns", "labels"):
            f[key] = h5py.ExternalLink("data.h5", f"/{key}")
    assert np.array_equal(np.asarray(load(master).arrays["y"]), np.arange(80) % 14)
    with h5py.File(data_file, "a") as f:
        f["labels"][...] = np.eye(14, dtype=np.float32)[(np.arange(80) + 1) % 14]
    assert np.array_equal(np.asarray(load(master).arrays["y"]), (np.arange(80) + 1) % 14)


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


def test_datasets_inside_a_group_are_read_with_file_colons_group(tmp_path, monkeypatch, capsys):
    """A NeXus-style file keeps its arrays in a group ('/entry/data/patterns'); the error said
    only "missing dataset 'patterns' (present: entry)". It now names the group and the
    --data that reads it, ``FILE::/GROUP`` (silx's notation), which trains on the numbers as
    stored: a small file of links in the cache, nothing copied, the source untouched."""
    import shlex

    x = patterns()
    labels = np.arange(80) % 14
    source = tmp_path / "scan 7.h5"  # a space in the name: the printed --data must quote it
    with h5py.File(source, "w") as f:
        f["entry/title"] = "powder scan"
        f["entry/data/patterns"] = x
        f["entry/data/labels"] = labels
        f["entry/data"].attrs["label_set"] = "bravais"
    before = source.read_bytes()
    monkeypatch.setenv("SCITUNE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as refused:
        load(source)
    message = str(refused.value)
    assert "\n" not in message
    assert "missing dataset 'patterns' (present: entry)" in message
    assert message.endswith(f"the file holds it in group '/entry/data': pass --data "
                            f"{shlex.quote(f'{source}::/entry/data')}"), message
    for named in (f"{source}::/entry/data", f"{source}::entry/data/", f"{source}:/entry/data"):
        data = load(Path(named))
        assert np.array_equal(data.batch("x", data.train), x[data.train])
        assert np.array_equal(data.batch("x", data.val), x[data.val])
        assert np.array_equal(np.asarray(data.arrays["y"]), labels)
    assert source.read_bytes() == before
    cached = list((tmp_path / "cache" / "datasets").glob("group-*.h5"))
    assert len(cached) == 1 and cached[0].stat().st_size < x.nbytes / 10  # links, no copy
    # the numbers change in place: the next run reads the new ones (links, not a copy)
    with h5py.File(source, "a") as f:
        f["entry/data/patterns"][0] = 7.0
    data = load(Path(f"{source}::/entry/data"))
    assert np.asarray(data.arrays["x"])[0].max() == 7.0
    # faults name the user's --data, never the cache's file
    with h5py.File(source, "a") as f:
        f["entry/data/patterns"][3, 5] = np.nan
    with pytest.raises(DataError, match=r"^--data .*scan 7.h5::/entry/data: dataset 'patterns' holds "
                                        r"NaN or inf"):
        load(Path(f"{source}::/entry/data"))
    for wrong, why in ((f"{source}::/entry/nothing", "/entry/nothing in .* is no such group; "
                        r"name a group that holds the arrays \(groups at its top: /entry\)"),
                       (f"{source}::/entry/title", "/entry/title in .* is a dataset, not a group"),
                       (f"{tmp_path}/absent.h5::/entry", "no such file; check the path$")):
        with pytest.raises(DataError, match=why):
            load(Path(wrong))
    with pytest.raises(DataError, match=r"a folder, not a file; give the HDF5 file itself "
                                        r"\(it holds scan 7.h5\)"):
        load(tmp_path)

    runs = tmp_path / "runs.h5"
    with h5py.File(runs, "w") as f:
        for run in ("run_1", "run_2"):
            f[f"{run}/patterns"] = x
            f[f"{run}/labels"] = labels
    with pytest.raises(DataError, match=r"in groups '/run_1', '/run_2': pass --data \S+::/run_1 "
                                        r"\(one group per search\)$"):
        load(runs)
    capsys.readouterr()
    data = load(Path(f"{runs}::/run_2"))
    assert np.array_equal(np.asarray(data.arrays["x"]), x)
    said = capsys.readouterr().err  # an assumption about the labels names the user's --data
    assert f"data: assuming labels of {runs}::/run_2 (no label_set attribute)" in said, said
    flat = tmp_path / "flat.h5"
    with h5py.File(flat, "w") as f:
        f["labels"] = labels
    with pytest.raises(DataError, match=r"missing dataset 'patterns' \(present: labels\); "
                                        "see README 'Data' for the schema$"):
        load(flat)


@pytest.mark.parametrize("form", ["column", "one_hot", "floats"])
def test_labels_as_numpy_and_keras_code_store_them_read_as_classes(form, tmp_path):
    """Class labels written as a column (N, 1), one-hot rows (N, 14) (as the seed's own Y) or
    whole numbers in floats (pandas): each was refused ("expected 1 dimensions", "expected
    integers"); they are read as the same classes as (N,) integers."""
    x = patterns()
    y = np.random.default_rng(1).permutation(np.arange(80) % 14)
    stored = {"column": y[:, None], "one_hot": np.eye(14, dtype=np.float32)[y],
              "floats": y.astype(np.float64)}[form]
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["patterns"], f["labels"] = x, y
    with h5py.File(tmp_path / f"{form}.h5", "w") as f:
        f["patterns"], f["labels"] = x, stored
    plain, data = load(tmp_path / "plain.h5"), load(tmp_path / f"{form}.h5")
    for split in ("train", "val", "test"):
        rows = getattr(data, split)
        assert np.array_equal(rows, getattr(plain, split))
        assert np.array_equal(data.batch("y", rows), y[rows])
        assert np.array_equal(data.batch("x", rows), x[rows])
    assert data.info.num_classes == 14


def test_labels_that_are_not_classes_name_the_fault(tmp_path):
    x = patterns()
    y = np.arange(80) % 14
    faults = {
        "text": (np.array([b"cP", b"tI"] * 40), r"holds text \(dtype \|S2\); store class numbers"),
        "fractions": (y + 0.5, r"holds 0.5 \(row 0\); class labels are whole numbers"),
        "not one-hot": (np.full((80, 14), 0.5), r"shape \(80, 14\), and its rows are not one-hot"),
        "three dimensions": (y.reshape(80, 1, 1), r"shape \(80, 1, 1\); store one class number"),
        "a column too short": (y[:70, None], "'patterns' has 80 rows but 'labels' has 70"),
    }
    for name, (labels, message) in faults.items():
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f["patterns"], f["labels"] = x, labels
        with pytest.raises(DataError, match=message):
            load(path)


def test_a_large_compressed_file_is_read_through_one_mapped_copy(tmp_path, monkeypatch):
    """Compressed or chunked datasets were decompressed into the memory of the driver and of
    every trial, at every trial's start; above COPY_BYTES the file is read through one
    uncompressed copy in the cache, made once, memory-mapped (shared by the trials)."""
    import os

    from datasets import importing

    x = patterns(rows=120)
    source = tmp_path / "gzip.h5"
    with h5py.File(source, "w") as f:
        f.create_dataset("patterns", data=x, chunks=(16, 256), compression="gzip")
        f["labels"] = np.arange(120) % 14
        f.attrs["wavelength_angstrom"] = 1.5406
        f["entry/title"] = "kept"
    before = source.read_bytes()
    space = registry()[SPACE]
    assert prepare_data(space, str(source), 0, 0, {}) == str(source)  # small: read as it is
    data = get_dataset(space.dataset).load(str(source), 0, {})
    assert not isinstance(data.arrays["x"], np.memmap)
    monkeypatch.setattr(importing, "COPY_BYTES", x.nbytes)
    copy = prepare_data(space, str(source), 0, 0, {})
    assert copy != str(source) and Path(copy).parent == importing.cache_dir()
    data = get_dataset(space.dataset).load(copy, 0, {})
    assert isinstance(data.arrays["x"], np.memmap)
    assert np.array_equal(data.arrays["x"], x)
    with h5py.File(copy, "r") as f:
        assert f.attrs["wavelength_angstrom"] == 1.5406 and f["entry/title"][()] == b"kept"
        assert f.attrs["imported_from"] == str(source)
    made = os.stat(copy).st_mtime_ns
    assert prepare_data(space, str(source), 0, 0, {}) == copy  # once per content
    assert os.stat(copy).st_mtime_ns == made
    assert source.read_bytes() == before
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["patterns"], f["labels"] = x, np.arange(120) % 14
    assert prepare_data(space, str(plain), 0, 0, {}) == str(plain)  # mapped where it lies


@pytest.mark.parametrize("compression", ["Bitshuffle", "Blosc", "Zstd"])
def test_plugin_compressed_files_are_read_as_stored(compression, tmp_path):
    """Files compressed with the filters of hdf5plugin (Bitshuffle/LZ4 as Eiger detectors
    write them, Blosc, Zstd): every trial failed, HDF5 reporting only "can't open directory
    /usr/local/hdf5/lib/plugin". A fresh process that reads them as a trial does (no
    hdf5plugin imported beforehand) gets the stored numbers."""
    import subprocess
    import sys

    import hdf5plugin

    from tests.conftest import REPO

    x = patterns()
    path = tmp_path / f"{compression}.h5"
    compressor = getattr(hdf5plugin, compression)()
    with h5py.File(path, "w") as f:
        f.create_dataset("patterns", data=x, chunks=(16, x.shape[1]), **compressor)
        f["labels"] = np.arange(80) % 14
        assert str(compressor.filter_id) in f["patterns"]._filters  # stored compressed
    data = load(path)
    assert np.array_equal(data.batch("x", data.train[:5]), x[data.train[:5]])
    read = subprocess.run(
        [sys.executable, "-c", "import sys, numpy; from datasets.base import memmap_dataset; "
         f"numpy.save(sys.stdout.buffer, numpy.asarray(memmap_dataset({str(path)!r}, "
         "'patterns')))"], cwd=REPO, capture_output=True, timeout=120)
    assert read.returncode == 0, read.stderr.decode()[-2000:]
    import io

    assert np.array_equal(np.load(io.BytesIO(read.stdout)), x)


def test_without_hdf5plugin_a_compressed_file_names_the_filter_and_the_fix(tmp_path):
    """Where hdf5plugin is not installed (here: an ``hdf5plugin`` that fails to import, first
    on the path), a Bitshuffle file is refused in one line naming the filter and what to
    install, before anything is written."""
    import hdf5plugin

    from tests.conftest import run_cli

    x = patterns()
    path = tmp_path / "eiger.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("patterns", data=x, chunks=(16, x.shape[1]), **hdf5plugin.Bitshuffle())
        f["labels"] = np.arange(80) % 14
    absent = tmp_path / "absent"
    absent.mkdir()
    (absent / "hdf5plugin.py").write_text("raise ImportError('No module named hdf5plugin')\n")
    work = tmp_path / "work"
    work.mkdir()
    import os

    result = run_cli("--data", str(path), "--trials", "1", "--storage", str(work / "ray"),
                     "--mlflow-uri", f"sqlite:///{work / 'mlflow.db'}", cwd=work,
                     env={"PYTHONPATH": os.pathsep.join(filter(None, [
                         str(absent), os.environ.get("PYTHONPATH")]))})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: --data {path}: dataset 'patterns' is compressed with HDF5 filter 32008 "
        "(bitshuffle), which this installation cannot decode; install hdf5plugin (pip install "
        "hdf5plugin), which scitune loads when present, or decompress the file (h5repack -f "
        "NONE IN.h5 OUT.h5)"]
    assert list(work.iterdir()) == []
