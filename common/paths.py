"""Checks of folders and storage locations, shared by the search and the after-search tools."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from common.errors import BadInput


def is_uri(path: str | None) -> bool:
    """True for ``scheme://...`` storage (cloud or shared filesystems served by pyarrow)."""
    return bool(path) and "://" in str(path) and not str(path).startswith("file://")


#: Longest experiment name in UTF-8 bytes: it names a folder (255 bytes at most on common file
#: systems), and temporary files beside it add a suffix.
MAX_NAME_BYTES = 200


def check_experiment_name(name: str) -> None:
    """Raise :class:`BadInput` unless ``name`` can name an experiment's folder and records:
    not blank, no '/', not '.' or '..', no control characters, at most
    :data:`MAX_NAME_BYTES` bytes."""
    if not name.strip() or "/" in name or name in (".", ".."):
        raise BadInput(f"--experiment {name!r}: use a plain, non-blank name without '/'")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadInput(f"--experiment {name!r}: a control character in the name; use "
                       "printable characters")
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        raise BadInput(f"--experiment {name[:40]!r}...: {size} bytes long, longer than a "
                       f"folder name may safely be; shorten it to at most {MAX_NAME_BYTES}")


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
