"""A resumed trial whose recorded checkpoint Ray has since removed restores from the newest
complete one (search.checkpoint_repair); the whole kill-and-resume path runs in
tests/test_e2e.py::test_resume_after_driver_is_killed."""

from __future__ import annotations

import os
import time

import torch
from ray.tune import Checkpoint

from search.checkpoint_repair import newest_complete_checkpoint, replace_missing_checkpoint
from trainables.checkpoint import CHECKPOINT_FILE, load_state, save_state


def write_checkpoint(folder, epoch: int, mtime: float, truncate: bool = False) -> None:
    folder.mkdir()
    path = save_state({"epoch": torch.tensor(epoch), "weights": torch.arange(epoch * 10.0)},
                      str(folder))
    if truncate:  # a copy cut short by a kill: the zip's central directory is missing
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    (folder / "figures").mkdir()
    (folder / "figures" / "curve.png").write_bytes(b"png %d" % epoch)
    os.utime(path, (mtime, mtime))


def test_a_missing_checkpoint_is_replaced_by_the_newest_complete_one(tmp_path):
    now = time.time()
    # numbers are not an order: a resumed trial writes checkpoint_000001 again, after 000002
    write_checkpoint(tmp_path / "checkpoint_000002", epoch=3, mtime=now - 30)
    write_checkpoint(tmp_path / "checkpoint_000001", epoch=4, mtime=now - 20)
    write_checkpoint(tmp_path / "checkpoint_000003", epoch=5, mtime=now - 10, truncate=True)
    (tmp_path / "checkpoint_000004").mkdir()  # empty: no checkpoint file
    missing = tmp_path / "checkpoint_000000"

    newest = replace_missing_checkpoint(Checkpoint(str(missing)))

    assert newest == str(tmp_path / "checkpoint_000001")
    assert int(load_state(str(missing))["epoch"]) == 4
    assert (missing / "figures" / "curve.png").read_bytes() == b"png 4"
    assert int(load_state(str(tmp_path / "checkpoint_000001"))["epoch"]) == 4  # source kept


def test_an_existing_checkpoint_is_left_alone(tmp_path):
    write_checkpoint(tmp_path / "checkpoint_000000", epoch=1, mtime=time.time() - 10)
    write_checkpoint(tmp_path / "checkpoint_000001", epoch=2, mtime=time.time())
    assert replace_missing_checkpoint(Checkpoint(str(tmp_path / "checkpoint_000000"))) is None
    assert int(load_state(str(tmp_path / "checkpoint_000000"))["epoch"]) == 1


def test_nothing_is_made_up_when_no_complete_checkpoint_is_left(tmp_path):
    write_checkpoint(tmp_path / "checkpoint_000001", epoch=2, mtime=time.time(), truncate=True)
    missing = tmp_path / "checkpoint_000000"
    assert newest_complete_checkpoint(Checkpoint(str(missing)).filesystem, str(tmp_path)) is None
    assert replace_missing_checkpoint(Checkpoint(str(missing))) is None
    assert not missing.exists()
    assert (tmp_path / "checkpoint_000001" / CHECKPOINT_FILE).exists()
