"""A resumed trial restores from its newest complete checkpoint, even when the one Ray recorded
was removed.

Ray saves its experiment state (which records each trial's latest checkpoint) every few
seconds, while a trial keeps reporting: with ``num_to_keep`` set, Ray deletes the checkpoints
that fall out of the best ``num_to_keep``, so a checkpoint recorded as the latest in the last
saved state can be gone once the trial has reported two or three more epochs. A driver killed
then leaves a state that points at a missing folder, and Ray's restore fails the trial ("does
not exist on storage anymore"). Ray once fell back to the newest checkpoint available; it no
longer does. :class:`RestoreFromNewestCheckpoint` does, just before the restore: it copies the
trial's newest complete checkpoint into the missing folder, so the trial resumes from the
newest state it reached (its epoch is read from that checkpoint, and MLflow's record of each
epoch stays exactly once).
"""

from __future__ import annotations

import sys
import zipfile
from typing import Any

from ray.tune import Callback

from trainables.checkpoint import CHECKPOINT_FILE

CHECKPOINT_PREFIX = "checkpoint_"


def _is_complete(filesystem: Any, folder: str) -> bool:
    """Whether ``folder`` holds a whole checkpoint file: ``torch.save`` writes a zip whose
    central directory comes last, so a file cut short by a kill does not open."""
    try:
        with filesystem.open_input_file(f"{folder}/{CHECKPOINT_FILE}") as stream:
            zipfile.ZipFile(stream).close()
        return True
    except Exception:  # noqa: BLE001 - missing, truncated or unreadable: not complete
        return False


def newest_complete_checkpoint(filesystem: Any, trial_folder: str) -> str | None:
    """The trial's ``checkpoint_*`` folder whose checkpoint file was written last and is whole
    (folder numbers are not an order: a resumed trial writes its numbers again)."""
    from pyarrow import fs as pafs

    candidates = []
    for info in filesystem.get_file_info(pafs.FileSelector(trial_folder, allow_not_found=True)):
        if info.type != pafs.FileType.Directory or not info.base_name.startswith(CHECKPOINT_PREFIX):
            continue
        file_info = filesystem.get_file_info(f"{info.path}/{CHECKPOINT_FILE}")
        if file_info.type == pafs.FileType.File and _is_complete(filesystem, info.path):
            candidates.append((file_info.mtime_ns or 0, info.base_name, info.path))
    return max(candidates)[2] if candidates else None


def replace_missing_checkpoint(checkpoint: Any) -> str | None:
    """If ``checkpoint`` (a ``ray.tune.Checkpoint``) no longer exists, fill its folder with a
    copy of the trial's newest complete checkpoint; return that checkpoint's path (None: the
    checkpoint exists, or the trial has no complete one left)."""
    from pyarrow import fs as pafs

    filesystem, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
        return None
    trial_folder = path.rsplit("/", 1)[0]
    newest = newest_complete_checkpoint(filesystem, trial_folder)
    if newest is None:
        return None
    filesystem.create_dir(path, recursive=True)
    pafs.copy_files(newest, path, source_filesystem=filesystem, destination_filesystem=filesystem)
    return newest


def forget_missing_checkpoints(trial: Any) -> list[str]:
    """Drop from the trial's checkpoint bookkeeping (Ray's ``_CheckpointManager``, restored
    with the experiment state) the kept checkpoints whose folders are gone, and return their
    paths. Ray deletes a kept checkpoint once a better one arrives; deleting one that was
    already removed after Ray last saved its state raised ``FileNotFoundError`` in its
    checkpoint handling, which logged an error with a traceback and skipped the rest of the
    new checkpoint's bookkeeping (seen on a resume after the MLflow store stopped answering).
    """
    from pyarrow import fs as pafs

    manager = getattr(getattr(trial, "run_metadata", None), "checkpoint_manager", None)
    kept = getattr(manager, "_checkpoint_results", None)
    if not isinstance(kept, list):  # another Ray: nothing to repair here
        return []
    gone = []
    for result in list(kept):
        checkpoint = getattr(result, "checkpoint", None)
        if checkpoint is None:
            continue
        try:
            missing = checkpoint.filesystem.get_file_info(
                checkpoint.path.rstrip("/")).type == pafs.FileType.NotFound
        except Exception:  # noqa: BLE001 - unreachable storage: leave it to Ray
            continue
        if missing:
            kept.remove(result)
            gone.append(checkpoint.path)
    return gone


class RestoreFromNewestCheckpoint(Callback):
    """Before Ray restores a trial, make the checkpoint it restores from exist, and forget
    the kept checkpoints that are gone (module doc)."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        try:
            self._restore_latest(trial, checkpoint)
        finally:  # after the latest is replaced, which stays in the bookkeeping
            forget_missing_checkpoints(trial)

    @staticmethod
    def _restore_latest(trial: Any, checkpoint: Any) -> None:
        try:
            newest = replace_missing_checkpoint(checkpoint)
        except Exception as exc:  # noqa: BLE001 - Ray's own restore then reports the problem
            print(f"warning: trial {trial}: its checkpoint {checkpoint.path} is missing and "
                  f"could not be replaced ({type(exc).__name__}: {exc})", file=sys.stderr)
            return
        if newest is not None:
            print(f"trial {trial}: {_name(checkpoint.path)} was removed after Ray last saved "
                  f"its state; resuming from {_name(newest)}, the newest complete checkpoint")


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
