"""Checks of folders and storage locations, shared by the search and the after-search tools."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from common.errors import BadInput


def is_uri(path: str | None) -> bool:
    """True for ``scheme://...`` storage (cloud or shared filesystems served by pyarrow)."""
    return bool(path) and "://" in str(path) and not str(path).startswith("file://")


def check_writable_dir(path: Path, flag: str) -> None:
    """Raise :class:`BadInput` unless ``path`` is (or can be created as) a writable folder.

    Creates nothing: checks the nearest existing ancestor."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BadInput(f"{flag} {path}: {probe} is a file, not a folder; choose another path")
    try:  # a real write: permission bits say nothing for root or read-only mounts
        fd, tmp = tempfile.mkstemp(prefix=".scitune-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise BadInput(f"{flag} {path}: {probe} is not writable ({exc.strerror}); "
                       "choose a writable folder") from None
