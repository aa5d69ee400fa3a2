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


def test_kept_checkpoints_that_are_gone_are_forgotten_before_the_restore(tmp_path):
    """Ray's own checkpoint bookkeeping of a restored trial lists a kept checkpoint that was
    removed after Ray last saved its state: when a better checkpoint arrives, Ray deletes the
    worst kept one, and deleting the missing folder raised FileNotFoundError (which Tune
    logged with a traceback, skipping the rest of the new checkpoint's handling)."""
    import shutil
    from types import SimpleNamespace

    import pytest
    from ray.train import CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    from search.checkpoint_repair import RestoreFromNewestCheckpoint

    def result(epoch: int, score: float) -> _TrainingResult:
        folder = tmp_path / f"checkpoint_{epoch:06d}"
        write_checkpoint(folder, epoch, time.time())
        return _TrainingResult(checkpoint=Checkpoint(str(folder)),
                               metrics={"val_top1": score, "epoch": epoch})

    def restored_manager() -> _CheckpointManager:
        manager = _CheckpointManager(CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute="val_top1", checkpoint_score_order="max"))
        for epoch, score in ((1, 0.2), (2, 0.5)):
            manager.register_checkpoint(result(epoch, score))
        return manager

    manager = restored_manager()  # as Ray restores it: epochs 1 and 2 kept, 2 the latest
    shutil.rmtree(tmp_path / "checkpoint_000001")  # removed after Ray last saved its state
    with pytest.raises(FileNotFoundError):  # what Ray did with it on its own
        manager.register_checkpoint(result(3, 0.9))

    for folder in tmp_path.glob("checkpoint_*"):
        shutil.rmtree(folder)
    manager = restored_manager()
    shutil.rmtree(tmp_path / "checkpoint_000001")
    trial = SimpleNamespace(checkpoint=manager.latest_checkpoint_result.checkpoint,
                            run_metadata=SimpleNamespace(checkpoint_manager=manager))
    RestoreFromNewestCheckpoint().on_trial_start(0, [], trial)
    assert [r.metrics["epoch"] for r in manager.best_checkpoint_results] == [2]
    manager.register_checkpoint(result(3, 0.9))  # no error: nothing missing is deleted
    assert [r.metrics["epoch"] for r in manager.best_checkpoint_results] == [2, 3]
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*")) == [
        "checkpoint_000002", "checkpoint_000003"]
