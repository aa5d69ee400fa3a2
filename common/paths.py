"""Checks of folders and storage locations, shared by the search and the after-search tools."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from common.errors import BadInput


def is_uri(path: str | None) -> bool:
    """True for ``scheme://...`` storage (cloud or shared filesystems served by pyarrow)."""
    return bool(path) and "://" in str(path) and not str(path).startswith("file://")


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file_beside(path: Path, suffix: str) -> tuple[int, str]:
    """``tempfile.mkstemp`` in ``path``'s folder, given the mode an ordinary ``open`` would
    give the finished file (0666 less the umask): mkstemp's private 0600 would hide caches,
    states and exported files from the rest of a group that shares them once renamed."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
    return fd, tmp


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
