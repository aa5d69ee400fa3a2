"""The shared HDF5 helpers of ``datasets.base``: atomic writes and memmapped reads."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from datasets.base import atomic_h5, memmap_dataset


def test_generated_file_is_readable_while_a_child_holds_the_writers_descriptor(tmp_path):
    """A process started while the data are written (Ray's daemons, beside generation)
    inherits the writer's descriptor; the finished file must still open for reading."""
    path = tmp_path / "data.h5"
    with atomic_h5(path) as f:
        f.create_dataset("x", data=np.arange(12.0).reshape(4, 3))
        handle = f.id.get_vfd_handle()
        holder = subprocess.Popen(["sleep", "30"], pass_fds=(handle,))
    try:
        assert holder.poll() is None  # the inherited descriptor is still open
        np.testing.assert_array_equal(memmap_dataset(str(path), "x"), np.arange(12.0).reshape(4, 3))
    finally:
        holder.kill()
        holder.wait()


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "data.h5"
    with pytest.raises(RuntimeError), atomic_h5(path) as f:
        f.create_dataset("x", data=np.zeros(3))
        raise RuntimeError("generator failed")
    assert list(tmp_path.iterdir()) == []


def test_memmap_of_chunked_dataset_is_a_copy(tmp_path):
    path = tmp_path / "chunked.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.ones((8, 2)), chunks=(4, 2), compression="gzip")
    view = memmap_dataset(str(path), "x")
    assert not isinstance(view, np.memmap) and view.shape == (8, 2) and view.sum() == 16


def test_file_being_written_elsewhere_is_named_not_called_damaged(tmp_path):
    from datasets import get_dataset
    from datasets.base import DataError

    path = tmp_path / "calo.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((20, 16, 16, 3), np.float32))
        f.create_dataset("met", data=np.zeros((20, 2), np.float32))
    writer = subprocess.Popen(
        [sys.executable, "-c", f"import h5py, sys, time; f = h5py.File({str(path)!r}, 'a'); "
         "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        with pytest.raises(DataError, match="open for writing"):
            get_dataset("calo").prepare(str(path), 0, 0, {})
    finally:
        writer.kill()
        writer.wait()
    assert get_dataset("calo").prepare(str(path), 0, 0, {}) == str(path)


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_cache_and_state_files_honour_the_umask(tmp_path, umask):
    """Files written through a temporary file and a rename (the HDF5 cache, the experiment
    state) get the mode an ordinary ``open`` gives: group members sharing a cache or storage
    can read them unless the umask says otherwise (mkstemp alone would make them 0600)."""
    import os

    from datasets.base import atomic_h5
    from tracking.state import write_json_atomic

    old = os.umask(umask)
    try:
        with atomic_h5(tmp_path / "cache.h5") as f:
            f.create_dataset("x", data=np.arange(3))
        write_json_atomic(tmp_path / "state.json", {"a": 1})
        write_json_atomic(tmp_path / "state.json", {"a": 2})  # replaces an existing file
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for name in ("cache.h5", "state.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name
