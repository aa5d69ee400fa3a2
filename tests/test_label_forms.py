"""Class labels in the forms numpy, pandas and Keras-style code write them (a column, one-hot
rows, whole numbers stored as floats) are read as the same classes by every data set that
reads class labels, through a small file of links in the cache: the user's file is never
changed and its big arrays are never copied. Labels that are no classes are refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from common.errors import DataError
from datasets import get_dataset
from tests.test_import_watchmal import image_positions, write_digihits

#: data set → (samples of its synthetic file, its classes)
DATASETS = {"watchmal": (30, 3), "larcv": (30, 3), "multimodal": (30, 2)}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCITUNE_CACHE", str(tmp_path / "cache"))


def relabelled(name: str, tmp_path: Path, labels_of) -> tuple[Path, np.ndarray, np.ndarray]:
    """A copy of ``name``'s synthetic file whose labels are ``labels_of(classes, count)``; its
    path, the integer labels it stands for and the images as stored."""
    samples, classes = DATASETS[name]
    spec = get_dataset(name)
    generated = spec.prepare(None, samples, 0, {})
    user = tmp_path / f"{name}-user.h5"
    with h5py.File(generated, "r") as src, h5py.File(user, "w") as out:
        out.attrs.update(dict(src.attrs))
        for key in src:
            if key != "labels":
                src.copy(src[key], out, key)
        y = np.asarray(src["labels"][()], dtype=np.int64)
        out.create_dataset("labels", data=labels_of(y, classes))
        first = next(k for k in src if k != "labels" and src[k].ndim >= 3)
        stored = np.asarray(src[first][()])
    return user, y, stored


FORMS = {
    "a column (N, 1)": lambda y, classes: y[:, None].astype(np.int32),
    "one-hot rows (N, C)": lambda y, classes: np.eye(classes, dtype=np.float32)[y],
    "one-hot integers (N, C)": lambda y, classes: np.eye(classes, dtype=np.uint8)[y],
    "whole numbers as floats": lambda y, classes: y.astype(np.float64),
    "a float column": lambda y, classes: y[:, None].astype(np.float32),
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", DATASETS)
def test_labels_in_other_forms_are_read_as_the_same_classes(name, form, tmp_path, capsys):
    user, y, stored = relabelled(name, tmp_path, FORMS[form])
    before = digest(user)
    spec = get_dataset(name)
    prepared = spec.prepare(str(user), 0, 0, {})
    data = spec.load(prepared, 0, {})

    np.testing.assert_array_equal(np.asarray(data.arrays["y"], dtype=np.int64), y)
    np.testing.assert_array_equal(np.asarray(data.arrays["x"]), stored)  # through the links
    assert digest(user) == before
    as_they_are = name == "multimodal" and form == "whole numbers as floats"  # its own form
    if as_they_are:
        assert prepared == str(user.resolve())
        return
    assert Path(prepared).parent == tmp_path / "cache" / "datasets"
    assert os.path.getsize(prepared) < os.path.getsize(user) / 10  # the data were not copied
    assert "(stored as " in capsys.readouterr().err
    # a second run reuses the cache entry; a changed file gets its own
    assert spec.prepare(str(user), 0, 0, {}) == prepared
    with h5py.File(user, "a") as f:
        f.attrs["note"] = "changed"
    assert spec.prepare(str(user), 0, 0, {}) != prepared


REFUSED = {
    "text": (lambda y, classes: np.array([b"muon"] * len(y)), "holds text"),
    "fractions": (lambda y, classes: y + 0.5, "class labels are whole numbers"),
    "rows that are not one-hot": (lambda y, classes: np.full((len(y), classes), 0.5),
                                  "rows are not one-hot"),
    "NaN": (lambda y, classes: np.where(np.arange(len(y)) == 4, np.nan, y), "holds nan (row 4)"),
}


@pytest.mark.parametrize("form", REFUSED)
@pytest.mark.parametrize("name", DATASETS)
def test_labels_that_are_no_classes_are_refused_in_one_line(name, form, tmp_path):
    labels_of, message = REFUSED[form]
    if name == "multimodal" and form in ("fractions", "NaN"):  # (N,) floats: read as they are
        message = "labels must be 0 or 1"
    user, _, _ = relabelled(name, tmp_path, labels_of)
    before = digest(user)
    with pytest.raises(DataError) as error:
        get_dataset(name).prepare(str(user), 0, 0, {})
    assert message in str(error.value) and str(user) in str(error.value), error.value
    assert "\n" not in str(error.value)
    assert digest(user) == before
    assert not list((tmp_path / "cache" / "datasets").glob("labels-import-*"))


def test_a_moved_file_gets_a_new_entry_whose_links_point_at_it(tmp_path):
    user, y, _ = relabelled("larcv", tmp_path, FORMS["a column (N, 1)"])
    spec = get_dataset("larcv")
    first = spec.prepare(str(user), 0, 0, {})
    moved = user.rename(tmp_path / "moved.h5")
    second = spec.prepare(str(moved), 0, 0, {})
    assert second != first
    np.testing.assert_array_equal(np.asarray(spec.load(second, 0, {}).arrays["y"]), y)


def test_one_hot_labels_of_a_watchmal_hit_file_are_imported_as_classes(tmp_path, capsys):
    labels = [0, 1, 2, 1, 2, 0, 1, 2, 0, 1]
    write_digihits(tmp_path / "digihits.h5", labels)
    with h5py.File(tmp_path / "digihits.h5", "a") as f:
        del f["labels"]
        f["labels"] = np.eye(3, dtype=np.float32)[labels]
    np.savez(tmp_path / "mpmt_positions.npz", mpmt_image_positions=image_positions())
    spec = get_dataset("watchmal")
    options = {"mpmt_positions": str(tmp_path / "mpmt_positions.npz")}
    data = spec.load(spec.prepare(str(tmp_path / "digihits.h5"), 0, 0, options), 0, options)
    np.testing.assert_array_equal(np.asarray(data.arrays["y"]), labels)
    assert "(stored as one-hot rows over 3 classes)" in capsys.readouterr().err
