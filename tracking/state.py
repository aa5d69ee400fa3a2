"""The durable record of a search (``state.json``): settings, parent run and the
``trial_id → run_id`` map, written atomically with the previous version kept beside it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from common.paths import temp_file_beside

STATE_DIR = ".scitune"


def state_path(storage: str | os.PathLike[str], experiment: str) -> Path:
    """Where the durable state of ``experiment`` lives: beside Ray's results for a folder;
    in ``~/.cache/scitune/state`` on the driver's machine for a cloud URI."""
    storage = str(storage)
    if "://" in storage and not storage.startswith("file://"):
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in storage)
        root = Path(os.path.expanduser("~")) / ".cache" / "scitune" / "state" / slug
    else:
        root = Path(storage.removeprefix("file://")) / STATE_DIR
    return root / experiment / "state.json"


def write_json_atomic(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write JSON to ``path`` via a temporary file and rename (never a half-written file).

    The previous version is kept as ``<path>.prev`` so a damaged state can be recovered. It is
    linked (or copied) there, not moved: ``path`` exists at every instant, so a reader never
    misses it and a kill between the two steps leaves the state in place (moving it once left
    no ``state.json`` in that instant, and ``--resume`` found no experiment).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path, ".tmp")
    previous = tmp + ".prev"
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            with contextlib.suppress(OSError):
                try:
                    os.link(path, previous)
                except OSError:  # a file system without hard links
                    shutil.copyfile(path, previous)
                os.replace(previous, str(path) + ".prev")
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, previous):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(previous)


_HELD_LOCKS: dict[str, int] = {}  # folder -> the open descriptor that holds its lock


def hold_driver_lock(path: str | os.PathLike[str], experiment: str) -> None:
    """Lock the folder of the state ``path`` for this process's lifetime (``flock`` on the
    folder itself: no file is made, and the kernel lets go when the process ends, even by
    SIGKILL). A second driver of the same experiment on this machine, such as a ``--resume``
    typed while the search still runs, raises :class:`BadInput` here instead of running the
    same trials twice and dropping the running driver's MLflow runs as orphans."""
    import fcntl

    from common.errors import BadInput

    folder = str(Path(path).parent.resolve())
    if folder in _HELD_LOCKS:
        return
    fd = os.open(folder, os.O_RDONLY)  # not inherited by the processes this one starts
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BadInput(f"experiment {experiment!r} is being run by another driver right now "
                       f"(its state folder {folder} is locked); let it finish, or stop it "
                       "(Ctrl-C or kill <pid>) and then --resume") from None
    except OSError:  # a file system without flock: no guard, as before
        os.close(fd)
        return
    _HELD_LOCKS[folder] = fd


def held_driver_locks() -> set[str]:
    """The state folders this process holds locked (see :func:`hold_driver_lock`)."""
    return set(_HELD_LOCKS)


def release_driver_locks(keep: set[str] = frozenset()) -> None:
    """Let go of the locks of :func:`hold_driver_lock` but those in ``keep``."""
    for folder in [f for f in _HELD_LOCKS if f not in keep]:
        os.close(_HELD_LOCKS.pop(folder))


class ExperimentState:
    """The durable record of a search: settings, parent run and per-trial runs."""

    def __init__(self, path: str | os.PathLike[str], data: dict[str, Any]):
        self.path = Path(path)
        self.data = data

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExperimentState:
        """Read the state; raises ``ValueError`` naming the fix if it is damaged."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or "parent_run_id" not in data:
                raise ValueError("missing parent_run_id")
        except (OSError, ValueError) as exc:
            prev = Path(str(path) + ".prev")
            hint = (f"restore the previous state with: cp {prev} {path}" if prev.exists()
                    else "start a new --experiment")
            raise ValueError(f"experiment state {path} is unreadable ({exc}); {hint}") from None
        data.setdefault("trials", {})
        return cls(path, data)

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    @property
    def trials(self) -> dict[str, dict[str, Any]]:
        return self.data["trials"]
