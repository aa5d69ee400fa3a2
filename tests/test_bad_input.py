"""The bad-input table (README "Bad input"): each row exits 2 with one line naming the problem
and the fix, prints no traceback, and creates or changes nothing."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import run_cli
from tracking.state import state_path


def write_h5(path: Path, patterns, labels) -> Path:
    with h5py.File(path, "w") as f:
        if patterns is not None:
            f.create_dataset("patterns", data=patterns)
        if labels is not None:
            f.create_dataset("labels", data=labels)
    return path


def unknown_filter_file(path: Path, patterns, labels) -> Path:
    """'patterns' compressed with a filter no plugin here decodes: written with Bitshuffle
    (hdf5plugin), then the filter's id in the dataset's header changed to 32767."""
    import hdf5plugin

    with h5py.File(path, "w") as f:  # the default (oldest) format: no header checksums
        f.create_dataset("patterns", data=patterns, chunks=(20, patterns.shape[1]),
                         **hdf5plugin.Bitshuffle())
        f.create_dataset("labels", data=labels)
    blob = bytearray(path.read_bytes())
    name = blob.find(b"bitshuffle")
    assert name > 0 and blob[name - 8 : name - 6] == (32008).to_bytes(2, "little")
    blob[name - 8 : name - 6] = (32767).to_bytes(2, "little")
    path.write_bytes(bytes(blob))
    return path


def damaged_chunk_file(path: Path, patterns, labels, damaged: str) -> Path:
    """gzip-compressed datasets, one chunk of ``damaged`` overwritten in its middle."""
    with h5py.File(path, "w") as f:
        f.create_dataset("patterns", data=patterns, chunks=(20, patterns.shape[1]),
                         compression="gzip")
        f.create_dataset("labels", data=labels, chunks=(20,), compression="gzip")
        chunk = f[damaged].id.get_chunk_info(1)
    blob = bytearray(path.read_bytes())
    middle = chunk.byte_offset + chunk.size // 2
    blob[middle : middle + 8] = b"\xff" * 8
    path.write_bytes(bytes(blob))
    return path


def make_inputs(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    good_x, good_y = rng.random((60, 256), dtype=np.float32), rng.integers(0, 14, 60)
    files = {
        "good": write_h5(root / "good.h5", good_x, good_y),
        "text": root / "notes.h5",
        "missing_key": write_h5(root / "nolabels.h5", good_x, None),
        "in_a_group": root / "scan.h5",
        "wrong_rank": write_h5(root / "rank.h5", good_x[:, None, :], good_y),
        "strings": write_h5(root / "strings.h5", np.array([[b"x"] * 256] * 60), good_y),
        "nan": write_h5(root / "nan.h5", np.where(good_x > 0.999, np.nan, good_x), good_y),
        "labels_range": write_h5(root / "range.h5", good_x, good_y + 14),
        "empty": write_h5(root / "empty.h5", good_x[:0], good_y[:0]),
        "mismatch": write_h5(root / "mismatch.h5", good_x, good_y[:-5]),
    }
    files["text"].write_text("patterns,labels\n1,2\n")
    with h5py.File(files["in_a_group"], "w") as f:
        f["entry/data/patterns"], f["entry/data/labels"] = good_x, good_y
    with h5py.File(root / "master.h5", "w") as f:  # a detector's master file, its data gone
        f["patterns"] = h5py.ExternalLink("data_000001.h5", "/entry/data")
        f["labels"] = good_y
    files["dangling_link"] = root / "master.h5"
    layout = h5py.VirtualLayout(shape=good_x.shape, dtype=good_x.dtype)
    layout[:] = h5py.VirtualSource("run_0007.h5", "patterns", shape=good_x.shape)
    with h5py.File(root / "virtual.h5", "w") as f:
        f.create_virtual_dataset("patterns", layout)
        f["labels"] = good_y
    files["virtual_missing"] = root / "virtual.h5"
    files["unknown_filter"] = unknown_filter_file(root / "filter.h5", good_x, good_y)
    files["damaged_chunk"] = damaged_chunk_file(root / "chunk.h5", good_x, good_y, "patterns")
    files["damaged_labels"] = damaged_chunk_file(root / "labels.h5", good_x, good_y, "labels")
    counts = (good_x * 60000).astype(np.uint16)  # detector counts: no NaN scan reads them
    files["damaged_counts"] = damaged_chunk_file(root / "counts.h5", counts, good_y, "patterns")
    files["bad_prior"] = root / "prior.yaml"
    files["bad_prior"].write_text("config: [lr\n")
    files["binary"] = root / "binary.yaml"
    files["binary"].write_bytes(bytes(range(128, 256)))
    blob = files["good"].read_bytes()
    files["truncated"] = root / "truncated.h5"
    files["truncated"].write_bytes(blob[: len(blob) // 2])
    (root / "a_file").write_text("")
    files["damaged_db"] = root / "damaged.db"  # a SQLite header, then garbage
    files["damaged_db"].write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16)
    files["other_db"] = root / "other.db"
    with sqlite3.connect(files["other_db"]) as connection:
        connection.execute("CREATE TABLE samples (x REAL)")
    connection.close()
    old = state_path(root / "ray", "old")
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"parent_run_id": "x", "settings": {"space": "resnet1d"},
                               "trials": {}}))
    return files


# row: (arguments, what the message must say)
ROWS = {
    "missing --data file": (["--data", "{root}/absent.h5"], "no such file"),
    "not HDF5": (["--data", "{text}"], "not an HDF5 file"),
    "a group that is not in the file (silx's `FILE::/group`)": (
        ["--data", "{in_a_group}::/entry/nothing"],
        "/entry/nothing in {in_a_group} is no such group; name a group that holds the arrays "
        "(groups at its top: /entry)"),
    "a folder as `--data` where the space reads one HDF5 file": (
        ["--data", "{root}"], "a folder, not a file; give the HDF5 file itself (it holds "),
    "truncated HDF5": (["--data", "{truncated}"], "damaged or truncated"),
    "missing dataset key": (["--data", "{missing_key}"], "missing dataset 'labels'"),
    "the arrays inside a group (NeXus `/entry/data`)": (
        ["--data", "{in_a_group}"],
        "missing dataset 'patterns' (present: entry); the file holds it in group '/entry/data': "
        "pass --data {in_a_group}::/entry/data"),
    "wrong rank": (["--data", "{wrong_rank}"], "expected 2 dimensions"),
    "non-numeric dtype": (["--data", "{strings}"], "non-numeric dtype"),
    "NaN or inf": (["--data", "{nan}"], "NaN or inf"),
    "external link to a missing file": (["--data", "{dangling_link}"],
                                        "'patterns' is an external link to /entry/data in "
                                        "data_000001.h5, which cannot be opened"),
    "virtual dataset with a missing source": (["--data", "{virtual_missing}"],
                                              "virtual dataset 'patterns' maps run_0007.h5, "
                                              "which does not exist"),
    "compressed with a filter no plugin here decodes": (
        ["--data", "{unknown_filter}"],
        "dataset 'patterns' is compressed with HDF5 filter 32767 (bitshuffle), which this "
        "installation cannot decode; hdf5plugin, which scitune loads, does not have it"),
    "a damaged compressed chunk": (["--data", "{damaged_chunk}"],
                                   "HDF5 cannot read rows 0..59 of 'patterns' (Can't "
                                   "synchronously read data (filter returned failure"),
    "a damaged compressed chunk of integer counts": (["--data", "{damaged_counts}"],
                                                     "HDF5 cannot read rows 0..59 of "
                                                     "'patterns' (Can't synchronously read"),
    "a damaged compressed chunk of labels": (["--data", "{damaged_labels}"],
                                             "HDF5 cannot read rows 0..59 of 'labels' (Can't "
                                             "synchronously read data (filter returned "
                                             "failure"),
    "empty --data (an unset shell variable)": (["--data", ""],
                                               "argument --data: empty value; give one or "
                                               "leave the flag out"),
    "empty --storage": (["--storage", " "], "argument --storage: empty value"),
    "empty --export-best": (["--export-best", ""], "argument --export-best: empty value"),
    "labels out of range": (["--data", "{labels_range}"], "outside 0..13"),
    "zero samples": (["--data", "{empty}"], "zero samples"),
    "mismatched lengths": (["--data", "{mismatch}"], "must match"),
    "unknown space": (["--space", "resnet99"], "unknown space 'resnet99'"),
    "--experiment too long for a folder name": (["--experiment", "a" * 300],
                                                "300 bytes long, longer than a folder name"),
    "--experiment with a control character": (["--experiment", "run\n2"],
                                              "a control character in the name"),
    "trials 0": (["--trials", "0"], "--trials: 0 must be > 0"),
    "trials negative": (["--trials", "-3"], "--trials: -3 must be > 0"),
    "--data-option without a key": (["--data-option", "=crystal_system"],
                                    "argument --data-option: '=crystal_system' is not KEY=VALUE"),
    "negative --seed": (["--seed", "-1"], "--seed: -1 must be from 0 to 4294967295"),
    "--seed above 2**32-1": (["--seed", "4294967296"], "must be from 0 to 4294967295"),
    "negative CPUs": (["--cpus-per-trial", "-1"], "--cpus-per-trial: -1 must be"),
    "non-numeric GPUs": (["--gpus-per-trial", "abc"], "'abc' is not a number"),
    "more GPUs than the cluster": (["--gpus-per-trial", "1"], "the cluster has 0 GPUs"),
    "more CPUs than a node": (["--cpus-per-trial", "64"], "the largest node has"),
    "CPUs below Ray's unit": (["--cpus-per-trial", "1e-9"], "below Ray's smallest unit 0.0001"),
    "more workers than the cluster's CPUs": (["--workers-per-trial", "64"],
                                             "each worker is a process with its own model"),
    "unreachable --address": (["--address", "127.0.0.1:9"], "no Ray cluster answers"),
    "unwritable --storage": (["--storage", "{root}/a_file/ray"], "is a file, not a folder"),
    "unreachable --mlflow-uri": (["--mlflow-uri", "http://127.0.0.1:9"],
                                 "tracking server unreachable"),
    "damaged SQLite --mlflow-uri": (["--mlflow-uri", "sqlite:///{damaged_db}"],
                                    "not a usable SQLite database"),
    "a SQLite --mlflow-uri that is not MLflow's": (["--mlflow-uri", "sqlite:///{other_db}"],
                                                   "a SQLite database that is not an MLflow "
                                                   "store (tables: samples)"),
    "a MySQL --mlflow-uri MLflow cannot use": (["--mlflow-uri",
                                                "mysql+pymysql://me:s3cret@127.0.0.1:9/mlflow"],
                                               "mysql+pymysql://me:***@127.0.0.1:9/mlflow: "
                                               "MLflow cannot use this store"),
    "missing --prior file": (["--prior", "{root}/absent.yaml"], "no such file"),
    "--prior not YAML": (["--prior", "{bad_prior}"], "not valid YAML"),
    "--prior not text": (["--prior", "{binary}"], "not a text (UTF-8) file"),
    "--space-file not text": (["--space-file", "{binary}"], "not a text (UTF-8) file"),
    "--warm-start from an unknown experiment": (["--warm-start", "nope"],
                                                "--warm-start nope: no such MLflow experiment"),
    "--resume of an unknown experiment": (["--resume", "--experiment", "nope"],
                                          "no experiment 'nope'"),
    "--resume with another --space": (["--resume", "--experiment", "old", "--space", "faulty"],
                                      "searches space 'resnet1d', not 'faulty'"),
}


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    return root, make_inputs(root)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_bad_input_row(row, inputs, tmp_path):
    root, files = inputs
    args, message = ROWS[row]
    names = {k: str(v) for k, v in files.items()} | {"root": str(root)}
    argv = [a.format(**names) for a in args]
    message = message.format(**names) if any(f"{{{k}}}" in message for k in names) else message
    if "--storage" not in argv:
        argv += ["--storage", str(root / "ray")]
    if "--mlflow-uri" not in argv:
        argv += ["--mlflow-uri", f"sqlite:///{root / 'mlflow.db'}"]
    if "--experiment" not in argv:
        argv += ["--experiment", "fresh"]
    before = snapshot(root)
    cache = Path(__import__("os").environ["SCITUNE_CACHE"])
    cache_before = snapshot(cache) if cache.exists() else {}
    result = run_cli(*argv, "--trials" if "--trials" not in argv else "--seed",
                     "2" if "--trials" not in argv else "0", "--samples", "60", cwd=tmp_path)
    assert result.returncode == 2, (row, result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr and result.stdout.strip() == ""
    assert snapshot(root) == before, "bad input must not create or change any file"
    assert (snapshot(cache) if cache.exists() else {}) == cache_before
    assert list(tmp_path.iterdir()) == [], "nothing may be written to the working directory"
