"""The import steps every seed format shares (datasets/importing.py): sources refused by
name, one conversion per content, faults reported against the user's file with no cache entry
left behind, provenance recorded, assumptions printed once."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from common.errors import DataError
from datasets import importing


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCITUNE_CACHE", str(tmp_path / "cache"))


def writer(calls):
    def write(f, files):
        calls.append([p.name for p in files])
        f.create_dataset("x", data=np.concatenate([np.load(p) for p in files]))
    return write


def test_sources_are_listed_or_refused_by_name(tmp_path):
    with pytest.raises(DataError, match=r"--data .*nowhere: no such file or folder"):
        importing.source_files(str(tmp_path / "nowhere"), ["*.npy"], "code vectors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: a folder with no code vectors"):
        importing.source_files(str(tmp_path / "empty"), ["*.npy"], "code vectors")
    nested = tmp_path / "src" / "a" / "b"
    nested.mkdir(parents=True)
    for i in (2, 0, 1):
        np.save(nested / f"target_{i}.npy", np.full((1, 3), i, dtype=np.float32))
    (nested / "notes.txt").write_text("not matched")
    files = importing.source_files(str(tmp_path / "src"), ["*.npy"], "code vectors")
    assert [p.name for p in files] == ["target_0.npy", "target_1.npy", "target_2.npy"]


def test_one_conversion_per_content_with_provenance(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        np.save(src / f"t{i}.npy", np.full((1, 2), i, dtype=np.float32))
    calls: list = []
    files = importing.source_files(str(src), ["*.npy"], "arrays")
    first = importing.import_once(str(src), files, "demo", 1, writer(calls), lambda p: None)
    again = importing.import_once(str(src), files, "demo", 1, writer(calls), lambda p: None)
    assert first == again and len(calls) == 1
    with h5py.File(first) as f:
        assert f.attrs["imported_from"] == str(src)
        assert f.attrs["source_sha256"] == importing.digest_files(files, src)
        assert f.attrs["importer"] == "demo v1"
        np.testing.assert_array_equal(f["x"][:, 0], [0, 1, 2])
    # changed bytes, options or importer version: converted anew
    np.save(src / "t1.npy", np.full((1, 2), 7, dtype=np.float32))
    files = importing.source_files(str(src), ["*.npy"], "arrays")
    changed = importing.import_once(str(src), files, "demo", 1, writer(calls), lambda p: None)
    optioned = importing.import_once(str(src), files, "demo", 1, writer(calls), lambda p: None,
                                     {"label_base": 1})
    bumped = importing.import_once(str(src), files, "demo", 2, writer(calls), lambda p: None)
    assert len({first, changed, optioned, bumped}) == 4 and len(calls) == 4
    with h5py.File(optioned) as f:
        assert f.attrs["import_label_base"] == "1"


def test_faults_name_the_users_source_and_leave_no_cache_entry(tmp_path):
    src = tmp_path / "crops.npy"
    np.save(src, np.zeros((1, 2), dtype=np.float32))
    files = importing.source_files(str(src), ["*.npy"], "arrays")

    def bad_check(path):
        raise DataError(f"--data {path}: dataset 'x' holds NaN or inf (first at row 0)")

    with pytest.raises(DataError) as raised:
        importing.import_once(str(src), files, "demo", 1, writer([]), bad_check)
    assert str(raised.value) == f"--data {src}: dataset 'x' holds NaN or inf (first at row 0)"
    assert not list((tmp_path / "cache").rglob("*.h5")), "a failed import left a cache file"

    def bad_write(f, files):
        raise DataError("labels must be 0 or 1")

    with pytest.raises(DataError, match=rf"^--data {src}: labels must be 0 or 1$"):
        importing.import_once(str(src), files, "demo", 1, bad_write, lambda p: None)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_assumptions_are_printed_once(capsys):
    importing.assume("1-based labels (--data-option label_base=0 for 0-based)")
    importing.assume("1-based labels (--data-option label_base=0 for 0-based)")
    err = capsys.readouterr().err
    assert err.count("data: assuming 1-based labels") == 1
