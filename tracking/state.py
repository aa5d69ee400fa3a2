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
