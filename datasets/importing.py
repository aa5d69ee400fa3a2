"""Importing a seed's own on-disk format into the memory-mapped HDF5 cache, once.

Every importer follows the same steps, kept here so that each data set only says how its
format becomes arrays:

1. :func:`source_files` lists what the user pointed ``--data`` at (a file, or every file of
   a folder that the importer's patterns match), refusing a missing or empty source with a
   one-line :class:`DataError` that names it;
2. :func:`import_once` hashes those files (sha256, with a progress bar for large sources), and
   returns the cached HDF5 file of an earlier import of the same bytes and options, or calls
   the importer's ``write(h5file, files)`` into a temporary file beside the cache entry,
   records where it came from (``imported_from``, ``source_sha256``, ``importer``), runs the
   data set's own schema check and renames it into place. A fault found while converting or
   checking is reported against the user's source, never the cache file, and leaves no cache
   entry behind;
3. :func:`assume` prints, once per run, each convention the importer had to assume (a label
   base, a label set) and the ``--data-option`` that decides it otherwise: a guess is never
   silent.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DataError
from datasets.base import (
    DISK_MARGIN,
    atomic_h5,
    cache_dir,
    cache_key,
    maps_in_place,
    read_h5,
    read_rows,
)

#: files at least this large (together) get a progress bar while they are hashed
PROGRESS_BYTES = 64 * 2**20
_SAID: set[str] = set()
#: cache files that stand for a user's ``--data`` (see :func:`group_as_file`) → that --data
_GIVEN_AS: dict[str, str] = {}


def source_files(path: str, patterns: Sequence[str], what: str) -> list[Path]:
    """The files of ``--data path``: the file itself, or the files under a folder matching any
    of ``patterns`` (``glob`` patterns, searched recursively), sorted. ``what`` names the
    format in the error, e.g. "PNG crops (larcv_png_<N>/.../*.png)"."""
    source = Path(path)
    if not source.exists():
        raise DataError(f"--data {path}: no such file or folder; check the path")
    if source.is_file():
        return [source]
    found = sorted({p for pattern in patterns for p in source.rglob(pattern) if p.is_file()})
    if not found:
        raise DataError(f"--data {path}: a folder with no {what} in it; point --data at "
                        f"the folder that holds them")
    return found


def digest_files(files: Sequence[Path], root: Path | None = None) -> str:
    """sha256 over the files' relative names and bytes, in order (a progress bar for large
    sources); the key of an import in the cache and its ``source_sha256`` record."""
    total = sum(f.stat().st_size for f in files)
    digest = hashlib.sha256()
    bar = None
    if total >= PROGRESS_BYTES:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="checksumming --data", unit="B", unit_scale=True,
                   file=sys.stderr)
    try:
        for f in files:
            name = str(f.relative_to(root)) if root is not None else f.name
            digest.update(name.encode() + b"\0")
            try:
                with open(f, "rb") as stream:
                    while block := stream.read(2**22):
                        digest.update(block)
                        if bar is not None:
                            bar.update(len(block))
            except OSError as exc:
                raise DataError(f"--data {f}: cannot read ({exc.strerror})") from None
    finally:
        if bar is not None:
            bar.close()
    return digest.hexdigest()


def import_once(source: str, files: Sequence[Path], importer: str, version: int,
                write: Callable[[Any, Sequence[Path]], None], validate: Callable[[str], None],
                options: Mapping[str, Any] | None = None) -> str:
    """The cached HDF5 file converted from ``files`` (of ``--data source``) by ``write``.

    ``importer`` names the format (it prefixes the cache file); ``version`` changes when the
    conversion does; the files that HDF5 ``files`` link to are hashed with them; ``options``
    are the settings that change the result (label base, ...).
    ``write(h5file, files)`` fills an open, empty HDF5 file and raises :class:`DataError`
    for a fault of the source; ``validate(path)`` is the data set's schema check."""
    root = Path(source) if Path(source).is_dir() else None
    if len(files) == 1 or all(Path(f).suffix.lower() in HDF5_SUFFIXES for f in files):
        # a links file's bytes do not change with the data it reads: key the import by those
        linked = [p for f in files for p in linked_files(Path(f))]
        files = [*files, *(p for p in linked if p not in files)]
    checksum = digest_files(files, root)
    key = cache_key(importer=importer, v=version, sha=checksum, options=dict(options or {}))
    target = cache_dir() / f"{importer}-import-{key}.h5"
    if target.exists():
        return str(target)
    try:
        with atomic_h5(target) as f:
            write(f, files)
            f.attrs["imported_from"] = os.path.abspath(source)
            f.attrs["source_sha256"] = checksum
            f.attrs["importer"] = f"{importer} v{version}"
            for name, value in (options or {}).items():
                f.attrs[f"import_{name}"] = str(value)
        validate(str(target))
    except DataError as exc:
        target.unlink(missing_ok=True)
        message = str(exc).replace(str(target), source)
        if source not in message:
            message = f"--data {source}: {message}"
        raise DataError(message) from None
    return str(target)


def assume(message: str) -> None:
    """Print ``data: assuming <message>`` once per process (stderr): what an importer took
    for granted, and the ``--data-option`` that says otherwise."""
    for stand_in, given in _GIVEN_AS.items():  # name the user's --data, not its stand-in
        message = message.replace(stand_in, given)
    if message not in _SAID:
        _SAID.add(message)
        print(f"data: assuming {message}", file=sys.stderr, flush=True)


def progress(items: Iterable[Any], total: int, desc: str) -> Iterable[Any]:
    """``items`` with a progress bar on stderr (tqdm), for conversions of many files."""
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="file", file=sys.stderr,
                disable=total < 200)


#: a file whose chunked or compressed datasets hold at least this many bytes (uncompressed)
#: is read through one uncompressed copy in the cache (see :func:`mappable_copy`)
COPY_BYTES = 64 * 2**20
COPY_VERSION = 1


def unmapped_bytes(path: str) -> int:
    """Uncompressed bytes of the top-level datasets of ``path`` that a memory map cannot read
    in place (chunked, compressed or virtual: each reading process holds its own copy)."""
    import h5py

    total = 0
    with read_h5(path) as f:
        for name in f:
            ds = f[name]
            if isinstance(ds, h5py.Dataset) and ds.shape and not maps_in_place(ds):
                total += ds.size * ds.dtype.itemsize
    return total


def mappable_copy(prepared: str, source: str) -> str:
    """The file trials read for ``--data source`` (prepared as ``prepared``): the file itself,
    or, where its chunked or compressed datasets hold :data:`COPY_BYTES` or more, one
    uncompressed, contiguous copy in the cache (made once per content, with a progress bar).

    Read as they are, such datasets are decompressed into the memory of every process that
    reads them, the driver and each trial, at the start of every trial; the copy is memory-
    mapped instead, so that the trials on a machine share one copy in its page cache. Where
    the cache's disk has no room for it, the file is read as it is and the run says so."""
    import shutil

    import h5py

    size = unmapped_bytes(prepared)
    if size < COPY_BYTES:
        return prepared
    free = shutil.disk_usage(cache_dir() if cache_dir().exists() else Path.home()).free
    if size > free * (1 - DISK_MARGIN):
        print(f"data: {source} is compressed or chunked ({size / 1e9:.1f} GB uncompressed) and "
              f"the cache's disk has {free / 1e9:.1f} GB free, too little for an uncompressed "
              "copy: every trial reads it into its own memory (set SCITUNE_CACHE to a larger "
              "disk, or store the file uncompressed: h5repack -f NONE IN.h5 OUT.h5)",
              file=sys.stderr, flush=True)
        return prepared

    def write(f: Any, files: Sequence[Path]) -> None:
        from tqdm import tqdm

        with read_h5(prepared) as src, tqdm(
                total=size, desc="uncompressing --data into the cache", unit="B",
                unit_scale=True, file=sys.stderr, disable=size < PROGRESS_BYTES) as bar:
            f.attrs.update(dict(src.attrs))
            for name in src:
                ds = src[name]
                if not isinstance(ds, h5py.Dataset) or not ds.shape or ds.dtype.kind not in "biuf":
                    src.copy(ds, f, name=name)  # groups, scalars, text: small, kept as they are
                    continue
                out = f.create_dataset(name, shape=ds.shape, dtype=ds.dtype)
                out.attrs.update(dict(ds.attrs))
                row_bytes = max(1, ds.size // max(1, ds.shape[0]) * ds.dtype.itemsize)
                step = max(1, 2**26 // row_bytes)
                for start in range(0, ds.shape[0], step):
                    block = read_rows(ds, source, name, start, start + step)
                    out[start : start + len(block)] = block
                    if not maps_in_place(ds):
                        bar.update(block.nbytes)

    return import_once(source=source, files=[Path(prepared)], importer="uncompressed",
                       version=COPY_VERSION, write=write, validate=lambda path: None)


#: file name endings of HDF5 files (whose links and virtual datasets read other files)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nxs", ".nx5", ".cxi")


def linked_files(path: Path) -> list[Path]:
    """The other files that the top-level datasets of HDF5 file ``path`` read (external links,
    virtual datasets' sources), and theirs in turn; a file that is not HDF5 reads none."""
    import h5py

    found: list[Path] = []
    todo, seen = [Path(path)], {Path(path).resolve()}
    while todo:
        current = todo.pop()
        try:
            if not h5py.is_hdf5(current):
                continue
            with read_h5(current) as f:
                reads = set()
                for name in f:
                    ds = f.get(name)
                    if not isinstance(ds, h5py.Dataset):
                        continue
                    reads.add(Path(ds.file.filename))
                    if ds.is_virtual:
                        reads |= {current.parent / v.file_name for v in ds.virtual_sources()
                                  if v.file_name != "."}
        except (OSError, KeyError, ValueError):  # a dangling link: the data set names it
            continue
        for other in sorted(reads):
            if other.is_file() and other.resolve() not in seen:
                seen.add(other.resolve())
                found.append(other)
                todo.append(other)
    return found


LABELS_VERSION = 1


def integer_labels(path: str, validate: Callable[[str], None], key: str = "labels",
                   floats_as_they_are: bool = False) -> str:
    """``path`` itself where its ``key`` holds ``(N,)`` integers (or is absent, or is not
    something :func:`~datasets.base.class_labels` reads); else a small file in the cache whose
    ``key`` holds those labels as ``(N,)`` int64 and whose other members are external links
    to ``path`` (nothing else is copied), checked by the data set's ``validate`` and announced.
    ``floats_as_they_are``: ``(N,)`` floats are left to the data set (which reads them).

    This is how labels stored as numpy, pandas and Keras-style code write them (a column
    ``(N, 1)``, one-hot rows ``(N, C)``, whole numbers as floats) reach every data set that
    reads class labels; text, fractions and rows that are not one-hot are refused by
    :func:`~datasets.base.class_labels` in one line naming the fix. The user's file is never
    modified; a moved or changed file gets a new cache entry."""
    import h5py

    from datasets.base import class_labels, open_h5

    with open_h5(path) as f:
        ds = f.get(key)
        if not isinstance(ds, h5py.Dataset) or (ds.ndim == 1 and (
                ds.dtype.kind in "iu" or (floats_as_they_are and ds.dtype.kind == "f"))):
            return path
        labels, stored_as, _ = class_labels(f, key, path)
        members = [name for name in f if name != key]
    if stored_as is None:
        return path
    assume(f"the labels of {path} (stored as {stored_as}) hold one class per sample; they "
           "are read into the cache as the schema's (N,) integers")
    source = os.path.abspath(path)

    def write(out: Any, files: Sequence[Path]) -> None:
        with read_h5(source) as src:
            out.attrs.update(dict(src.attrs))
        for name in members:
            out[name] = h5py.ExternalLink(source, f"/{name}")
        out.create_dataset(key, data=labels)

    return import_once(source=path, files=[Path(path)], importer="labels",
                       version=LABELS_VERSION, write=write, validate=validate,
                       options={"key": key, "linked_to": source})


GROUP_VERSION = 1


def split_group_path(path: str) -> tuple[str, str] | None:
    """``(file, group)`` of a ``--data`` that names a group inside an existing HDF5 file, as
    silx writes it (``scan.h5::/entry/data``, also ``scan.h5:/entry/data``); ``None`` for a
    path that exists itself or is not of that form."""
    if os.path.exists(path):
        return None
    for mark in ("::", ":/"):
        file_part, sep, group = path.rpartition(mark)
        if sep and Path(file_part).is_file():
            return file_part, "/" + group.strip("/")
    return None


def group_as_file(path: str) -> str:
    """The file a data set reads for ``--data FILE::/GROUP`` (arrays kept in a group, as NeXus
    and one-group-per-run files keep them): a small file in the cache whose top level links
    to that group's members (nothing copied; the group's attributes over the file's); ``path``
    itself for any other ``--data``. A missing or empty group raises :class:`DataError`."""
    import h5py

    from datasets.base import open_h5

    parts = split_group_path(path)
    if parts is None:
        return path
    file_part, group = parts
    with open_h5(file_part) as f:
        node = f.get(group) if group != "/" else f
        if not isinstance(node, h5py.Group):
            what = "a dataset, not a group" if isinstance(node, h5py.Dataset) else "no such group"
            groups = [f"/{name}" for name, obj in f.items() if isinstance(obj, h5py.Group)]
            raise DataError(f"--data {path}: {group} in {file_part} is {what}; name a group "
                            "that holds the arrays (groups at its top: "
                            f"{', '.join(groups[:8]) or 'none'})")
        members = list(node)
        attributes = {**dict(f.attrs), **dict(node.attrs)}
    if not members:
        raise DataError(f"--data {path}: group {group} of {file_part} is empty; name the group "
                        "that holds the arrays")
    source = os.path.abspath(file_part)
    inside = group.rstrip("/")
    # keyed by what the file of links holds, not by the data's bytes: links read them live
    values = hashlib.sha256()
    for name, value in sorted(attributes.items()):
        array = np.asarray(value)
        values.update(f"{name}\0{array.dtype}\0{array.shape}\0".encode())
        values.update(repr(value).encode() if array.dtype.kind == "O" else array.tobytes())
    key = cache_key(v=GROUP_VERSION, file=source, group=group, members=members,
                    attributes=values.hexdigest())
    target = cache_dir() / f"group-{key}.h5"
    if not target.exists():
        with atomic_h5(target) as out:
            out.attrs.update(attributes)
            for name in members:
                out[name] = h5py.ExternalLink(source, f"{inside}/{name}")
            out.attrs["linked_from"] = f"{source}::{group}"
    _GIVEN_AS[str(target)] = path
    return str(target)
