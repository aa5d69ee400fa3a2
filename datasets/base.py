"""Shared pieces of every data set: errors, split containers, HDF5 schema checks, memory maps.

Design: a data set is *prepared* once on the driver (generated, imported or validated, with
any problem raised as :class:`DataError` before Ray starts) and *loaded* cheaply in every
worker process by memory-mapping the contiguous HDF5 datasets, so all trials on a node share
one copy of the data through the page cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DataError
from common.paths import temp_file_beside

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Images for models with a tanh output are mapped to [-TANH_RANGE, TANH_RANGE], not [-1, 1]:
#: sparse images are mostly background, and a background at exactly −1 (tanh's asymptote)
#: drives Adam to push the output layer to −∞, saturating tanh so nothing is learnt
#: (measured: every auto-encoder stuck at the all-background loss). 0.95 is reachable.
TANH_RANGE = 0.95


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about the data to build itself."""

    input_shape: tuple[int, ...]
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


#: ``transform(rows, config) -> rows``: turns rows read from a stored array into model input
#: (channel selection, layout, normalisation); ``config`` is the trial's configuration.
BatchTransform = Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]


@dataclass
class DataSplits:
    """Arrays (often memory-mapped) and the index arrays of the three splits.

    ``transforms`` maps an array name to a :data:`BatchTransform` applied to every batch read
    through :meth:`batch` (the stored bytes stay untouched and shared between trials)."""

    arrays: dict[str, np.ndarray]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    info: DataInfo
    source: str = ""
    transforms: dict[str, BatchTransform] = field(default_factory=dict)

    def batch(self, key: str, idx: np.ndarray, config: Mapping[str, Any] | None = None
              ) -> np.ndarray:
        """Rows ``idx`` (sorted) of ``arrays[key]`` as model input."""
        rows = native_byte_order(np.asarray(self.arrays[key][idx]))
        transform = self.transforms.get(key)
        return rows if transform is None else transform(rows, config or {})


@dataclass(frozen=True)
class UpstreamModel:
    """An earlier stage's model a data set builds on, resolved by the search layer
    (:mod:`search.stages`) before trials start: data sets never read MLflow or train models.

    ``source`` says where it came from (an MLflow run id, or how it was trained now) and
    belongs in cache keys; ``weights(data) -> (config, model state dict)`` reads it or, for a
    stage trained on the spot, trains it on ``data`` (called only when needed);
    ``build(config, info)`` is the stage's model factory."""

    space: str
    source: str
    weights: Callable[[DataSplits | None], tuple[dict[str, Any], dict[str, Any]]]
    build: Callable[[dict[str, Any], DataInfo], Any]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set.

    ``prepare(path, samples, seed, options) -> str`` runs on the driver: it validates a user
    file (raising :class:`DataError`), imports a foreign format, or generates the synthetic
    default into the cache, and returns the path of a valid HDF5 file. A data set built on
    an earlier stage's model also takes ``upstream={name: UpstreamModel}``.
    ``load(h5_path, seed, options) -> DataSplits`` runs in workers and must be cheap.
    ``options`` are data-set specific ``--data-option KEY=VALUE`` settings.
    """

    name: str
    prepare: Callable[[str | None, int, int, Mapping[str, str]], str]
    load: Callable[[str, int, Mapping[str, str]], DataSplits]
    description: str = ""
    options: Mapping[str, str] = field(default_factory=dict)  # name -> help text
    default_samples: int = 1000


def cache_dir() -> Path:
    """Folder for generated and imported data (``$SCITUNE_CACHE`` or ``~/.cache/scitune``)."""
    root = os.environ.get("SCITUNE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "scitune"
    )
    path = Path(root).absolute() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


#: ``$SCITUNE_DATA_WORKERS``: processes that generate a synthetic data set (1: in this process)
DATA_WORKERS_ENV = "SCITUNE_DATA_WORKERS"
#: below this many rows per process a pool costs more (its start, imports) than it saves
ROWS_PER_WORKER = 500


def data_workers(rows: int) -> int:
    """Processes to generate ``rows`` synthetic rows with: ``$SCITUNE_DATA_WORKERS`` if set,
    else one per available CPU core, but no more than one per :data:`ROWS_PER_WORKER` rows."""
    given = os.environ.get(DATA_WORKERS_ENV, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise DataError(f"{DATA_WORKERS_ENV}={given!r} is not a positive integer; set it "
                            "to the processes that generate data (1: no pool), or unset it")
        return int(given)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, rows // ROWS_PER_WORKER))


def generate_in_chunks(simulate: Callable[..., np.ndarray], rows: int, chunk: int = 64,
                       per_row: Any = None, progress: Callable[[int], None] | None = None,
                       workers: int | None = None) -> np.ndarray:
    """``concatenate([simulate(a, b) for a, b in chunks of range(rows)])``, the chunks spread
    over ``workers`` processes (default :func:`data_workers`).

    ``simulate(start, stop)`` returns rows ``start..stop-1``; with ``per_row`` (a sequence of
    one input per row, e.g. labels) it is called ``simulate(start, stop, per_row[start:stop])``,
    so each process is sent only its chunk's inputs. It must depend on nothing but its
    arguments (each row seeded from its own index), so the result is the same whatever the
    number of processes, and be picklable (a module-level function or a ``functools.partial``
    of one). Processes are spawned, never forked (a caller holding threads, as Ray and torch
    do, is safe); as with any spawned pool, a script that generates data at its top level
    needs ``if __name__ == "__main__":``. ``progress(n)`` is called as ``n`` more rows are
    done. Where no pool can start, or it breaks, the chunks not done run in this process.
    """
    import sys
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import current_process, get_context

    if getattr(current_process(), "_inheriting", False):
        # a spawned worker re-running an unguarded main script: stop it before it does the
        # caller's work again (its parent then generates the data itself)
        raise RuntimeError(f"data generation started a process pool from a script's top level:"
                           f" guard the script with `if __name__ == \"__main__\":`, or set "
                           f"{DATA_WORKERS_ENV}=1")

    bounds = [(a, min(a + chunk, rows)) for a in range(0, rows, chunk)]

    def args(a: int, b: int) -> tuple[Any, ...]:
        return (a, b) if per_row is None else (a, b, per_row[a:b])

    workers = min(data_workers(rows) if workers is None else workers, len(bounds))
    parts: dict[int, np.ndarray] = {}
    if workers > 1:
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(simulate, *args(a, b)): a for a, b in bounds}
                for future in as_completed(futures):
                    part = future.result()
                    parts[futures[future]] = part
                    if progress is not None:
                        progress(len(part))
        except (OSError, BrokenProcessPool) as exc:  # no pool here (limits, no /dev/shm),
            print(f"warning: data generation in {workers} processes failed "  # or it died
                  f"({type(exc).__name__}: {exc}); generating the rest in this process "
                  f"(set {DATA_WORKERS_ENV}=1 to skip the pool)", file=sys.stderr)
    for a, b in bounds:
        if a not in parts:
            parts[a] = simulate(*args(a, b))
            if progress is not None:
                progress(b - a)
    return np.concatenate([parts[a] for a, _ in bounds]) if bounds else np.empty((0,))


def available_memory() -> int:
    """Bytes of memory a new allocation can get: the system's available memory, or less where
    this process's cgroup (a container, a batch job) caps it."""
    import psutil

    available = psutil.virtual_memory().available
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max", or v1's huge number: no cap
            available = min(available, max(int(limit) - usage, 0))
        break
    return available


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes < 1000 or unit == "TB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return ""


#: disk space left free beside a generated set (the cache's file system is shared)
DISK_MARGIN = 0.05


def check_room(target: Path, samples: int, row_bytes: int, memory_factor: float,
               fewest: int = 1) -> None:
    """Refuse, before generating, a synthetic set the cache's disk or this machine's memory
    cannot hold: ``samples`` rows of ``row_bytes`` bytes each as written to ``target``; while
    it is generated the process's memory grows by ``memory_factor`` times the set's size (the
    generator's measured peak: ``bench/generation_memory.py``; 0: nothing held in memory).
    ``fewest`` is the smallest ``--samples`` the data set takes.

    A slip of a digit in ``--samples`` otherwise simulates for hours before it runs out of
    memory or disk; this names the size and the largest ``--samples`` that fits."""
    need_disk = samples * row_bytes
    free_disk = shutil.disk_usage(target.parent).free * (1 - DISK_MARGIN)
    need_memory = memory_factor * need_disk
    memory = available_memory() if memory_factor else math.inf
    short = []
    if need_disk > free_disk:
        short.append(f"{_size(need_disk)} on disk ({_size(free_disk)} free in {target.parent})")
    if need_memory > memory:
        short.append(f"about {_size(need_memory)} of memory to generate it "
                     f"({_size(memory)} available)")
    if not short:
        return
    fits = int(min(free_disk / row_bytes, memory / (memory_factor * row_bytes or 1)))
    if fits >= fewest:
        fix = f"lower --samples to at most {fits}"
    else:  # the samples themselves are too large (a --data-option), or the machine too small
        fix = f"not even the {fewest} samples it needs fit: make each smaller (--data-option)"
    if need_disk > free_disk:
        fix += ", or point SCITUNE_CACHE at a larger disk"
    raise DataError(f"--samples {samples}: the synthetic set ({row_bytes} bytes a sample) needs "
                    f"{' and '.join(short)}; {fix}")


def file_fingerprint(path: str | os.PathLike[str], block: int = 1 << 20) -> str | None:
    """``size:sha256`` of a data file's size and its first, middle and last MiB: cheap on a
    file of any size, and changed by any rewrite that changes its length or those bytes (a
    copy that keeps the bytes keeps it). None where ``path`` is not a readable file."""
    try:
        size = os.path.getsize(path)
        digest = hashlib.sha256(str(size).encode())
        with open(path, "rb") as f:
            for start in sorted({0, max(0, size // 2 - block // 2), max(0, size - block)}):
                f.seek(start)
                digest.update(f.read(block))
    except OSError:
        return None
    return f"{size}:{digest.hexdigest()[:32]}"


def cache_key(**params: Any) -> str:
    """A short stable hash of generation parameters."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Open a temporary HDF5 file beside ``path`` and rename it into place on success.

    A crash or error leaves no partial file at ``path``. The private temporary file is
    written without HDF5's ``flock``: a process forked while it is open (Ray starting its
    daemons beside data generation) inherits the descriptor, and an inherited exclusive lock
    would make the renamed file unreadable until that process closed it.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path, ".part")
    os.close(fd)
    try:
        with h5py.File(tmp, "w", locking=False) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def reject_unknown_options(options: Mapping[str, str], known: Mapping[str, str]) -> None:
    """Raise :class:`DataError` naming any ``--data-option`` key the data set does not know."""
    unknown = set(options) - set(known)
    if unknown:
        raise DataError(f"unknown --data-option {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(known)}")


def int_option(options: Mapping[str, str], key: str, default: int) -> int:
    """An integer ``--data-option`` (``DataError`` naming it when it is not one)."""
    try:
        return int(options.get(key, default))
    except ValueError:
        raise DataError(f"--data-option {key} must be an integer") from None


def split_indices(n: int, seed: int, fractions: tuple[float, float] = (0.7, 0.15)):
    """Seeded train/val/test split of ``range(n)`` (val and test get at least one sample)."""
    if n < 3:
        raise DataError(f"only {n} samples: need at least 3 for train/val/test splits")
    order = np.random.default_rng(seed).permutation(n)
    n_train = max(1, int(round(fractions[0] * n)))
    n_val = max(1, int(round(fractions[1] * n)))
    n_train = min(n_train, n - 2)
    n_val = min(n_val, n - n_train - 1)
    return (
        np.sort(order[:n_train]),
        np.sort(order[n_train : n_train + n_val]),
        np.sort(order[n_train + n_val :]),
    )


def no_such_data(path: str, fix: str = "check the path") -> DataError:
    """The error for a ``--data`` path that does not exist, with ``fix``."""
    return DataError(f"--data {path}: no such file; {fix}")


def check_hdf5_file(path: str) -> None:
    """Raise :class:`DataError` unless ``path`` is an existing, readable HDF5 file."""
    p = Path(path)
    if not p.exists():
        raise no_such_data(path)
    if not p.is_file():
        if p.is_dir():
            found = sorted(q.name for q in p.glob("*.h5")) + sorted(q.name for q in p.glob("*.hdf5"))
            shown = f" (it holds {', '.join(found[:3])}{' ...' if len(found) > 3 else ''})" \
                if found else ""
            raise DataError(f"--data {path}: a folder, not a file; give the HDF5 file "
                            f"itself{shown}")
        raise DataError(f"--data {path}: not a file")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise DataError(f"--data {path}: cannot read ({exc.strerror})") from None
    if head != HDF5_SIGNATURE:
        raise DataError(f"--data {path}: not an HDF5 file; convert it (see README 'Data')")


@functools.cache
def filter_plugins() -> bool:
    """Register the compression filters of ``hdf5plugin`` (Bitshuffle/LZ4 as Dectris' Eiger
    detectors write, Blosc, Zstd, LZ4, bzip2, ...) with h5py's HDF5, once per process;
    False where ``hdf5plugin`` is not installed (HDF5 then decodes gzip, szip, lzf only)."""
    try:
        import hdf5plugin  # noqa: F401  (importing it registers the filters)
    except ImportError:
        return False
    return True


def read_h5(path: str | os.PathLike[str]):
    """``h5py.File(path, "r")`` that also works where the file system has no ``flock``
    (common on cluster storage); a lock held by a writer still refuses the open. The
    compression filters of :func:`filter_plugins` are registered first, in every process
    that reads (a Ray trial too)."""
    import h5py

    filter_plugins()
    return h5py.File(path, "r", locking="best-effort")


def open_h5(path: str):
    """Open a user's HDF5 file read-only; a file that another process is writing, or a
    truncated or damaged one, raises :class:`DataError`."""
    check_hdf5_file(path)
    try:
        f = read_h5(path)
    except OSError as exc:
        if "unable to lock file" in str(exc):
            raise DataError(f"--data {path}: another process has the file open for writing; "
                            "wait until it has finished, or pass a finished copy") from None
        raise DataError(
            f"--data {path}: HDF5 file is damaged or truncated ({str(exc).splitlines()[0]}); "
            "re-create or re-copy it"
        ) from None
    try:
        check_links(f, path)
    except BaseException:
        f.close()
        raise
    return f


def check_links(f: Any, path: str) -> None:
    """Raise :class:`DataError` if a soft or external link among the file's top-level members
    (where every schema keeps its arrays) does not resolve: a dangling link, or an external
    file that is missing or unreadable, which h5py reports only when the member is first
    read, as a bare ``KeyError``. Linked datasets are checked as :func:`check_storage` does."""
    import h5py
    from h5py import h5l

    linked: list[str] = []

    def note(name: bytes, info: Any) -> None:
        if info.type != h5l.TYPE_HARD:
            linked.append(name.decode("utf-8", "replace"))

    f.id.links.iterate(note, info=True)  # names first: no exception may cross HDF5's C loop
    for name in linked:
        link = f.get(name, getlink=True)
        try:
            member = f[name]
        except (KeyError, OSError) as exc:
            reason = str(exc).strip("'\"").splitlines()[0]
            if isinstance(link, h5py.ExternalLink):
                target = f"an external link to {link.path} in {link.filename}"
                fix = "put that file where the link points, or copy the data into this file"
            else:
                target = f"a soft link to {getattr(link, 'path', '?')}"
                fix = "fix the link or store the data under that name"
            raise DataError(f"--data {path}: '{name}' is {target}, which cannot be opened "
                            f"({reason}); {fix}") from None
        if isinstance(member, h5py.Dataset):
            check_storage(member, name, path)


def check_storage(ds: Any, key: str, path: str) -> None:
    """Raise :class:`DataError` if dataset ``ds`` cannot be read the same way in a trial: a
    virtual dataset whose source file is missing (HDF5 would read its part as fill values,
    silently), or numbers kept in external raw files (HDF5 looks for those from the working
    folder, which a trial changes)."""
    if ds.external:
        files = ", ".join(sorted({str(entry[0]) for entry in ds.external}))
        raise DataError(f"--data {path}: dataset '{key}' keeps its numbers in external raw "
                        f"files ({files}); store the array in the HDF5 file itself")
    check_filters(ds, key, path)
    if not ds.is_virtual:
        return
    here = os.path.dirname(os.path.abspath(ds.file.filename))
    for source in ds.virtual_sources():
        if source.file_name in (".", ds.file.filename):
            continue
        if not any(os.path.isfile(c) for c in (source.file_name,
                                                os.path.join(here, source.file_name))):
            raise DataError(
                f"--data {path}: virtual dataset '{key}' maps {source.file_name}, which does "
                "not exist (HDF5 would read zeros there); put the file beside this one or "
                "repack the data into one file")


def check_filters(ds: Any, key: str, path: str) -> None:
    """Raise :class:`DataError` if dataset ``ds`` is compressed with an HDF5 filter this
    installation cannot decode (HDF5 itself says only "can't read data", deep in a trial).
    A filter that is missing but was not applied (an optional filter the writer lacked too)
    passes: its first row is read to tell."""
    from h5py import h5z

    plist = ds.id.get_create_plist()
    for index in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(index)
        if h5z.filter_avail(code):
            continue
        try:
            if ds.shape and ds.shape[0]:
                ds[:1]
            continue
        except OSError:
            pass
        label = name.decode("utf-8", "replace").split(";")[0].strip() or "unnamed"
        if filter_plugins():
            fix = ("hdf5plugin, which scitune loads, does not have it: set HDF5_PLUGIN_PATH "
                   "to the folder of that filter's plugin, or decompress the file where it "
                   "is installed (h5repack -f NONE IN.h5 OUT.h5)")
        else:
            fix = ("install hdf5plugin (pip install hdf5plugin), which scitune loads when "
                   "present, or decompress the file (h5repack -f NONE IN.h5 OUT.h5)")
        raise DataError(f"--data {path}: dataset '{key}' is compressed with HDF5 filter "
                        f"{code} ({label}), which this installation cannot decode; {fix}")


def groups_holding(f: Any, key: str, limit: int = 20_000) -> list[str]:
    """Names of the groups below the top of ``f`` that hold a dataset called ``key`` (a NeXus
    ``/entry/data``, one group per run), in file order; at most ``limit`` objects are visited."""
    import h5py

    found: list[str] = []
    visited = 0

    def look(name: str, obj: Any) -> bool | None:
        nonlocal visited
        visited += 1
        if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] == key and "/" in name:
            found.append("/" + name.rsplit("/", 1)[0])
        return True if visited >= limit else None

    with contextlib.suppress(Exception):  # an unreadable corner of the file only ends the hint
        f.visititems(look)
    return found


def nested_hint(f: Any, keys: list[str], path: str) -> str | None:
    """For schema datasets ``keys`` missing from the top of ``f`` but present in a group below
    it: the one-line fix, ``--data FILE::/GROUP`` (which reads that group's arrays as stored,
    nothing copied); ``None`` when no group holds them."""
    import shlex

    groups = groups_holding(f, keys[0])
    if not groups:
        return None
    where = f"group '{groups[0]}'" if len(groups) == 1 else \
        f"groups {', '.join(repr(g) for g in groups[:3])}{' ...' if len(groups) > 3 else ''}"
    return (f"the file holds it in {where}: pass --data {shlex.quote(f'{path}::{groups[0]}')}"
            + (" (one group per search)" if len(groups) > 1 else ""))


def require_dataset(f: Any, key: str, path: str, *, ndim: int | None = None,
                    numeric: bool = True, integer: bool = False):
    """Return ``f[key]`` after checking presence, rank and dtype; else :class:`DataError`."""
    import h5py

    if key in f and not isinstance(f[key], h5py.Dataset):
        raise DataError(f"--data {path}: '{key}' is a group, not a dataset; store the array "
                        f"itself as '{key}' (see README 'Data' for the schema)")
    if key not in f:
        raise DataError(f"--data {path}: missing dataset '{key}' "
                        f"(present: {', '.join(sorted(f.keys())) or 'none'}); "
                        + (nested_hint(f, [key], path) or "see README 'Data' for the schema"))
    ds = f[key]
    check_storage(ds, key, path)
    if ndim is not None and ds.ndim != ndim:
        hint = "; store one class number per sample" if integer and ndim == 1 else ""
        raise DataError(
            f"--data {path}: dataset '{key}' has shape {ds.shape}, expected {ndim} dimensions"
            f"{hint}"
        )
    kind = ds.dtype.kind
    if integer and kind not in "iu":
        hint = f" (numpy: {key}.astype(np.int64))" if kind == "f" else ""
        raise DataError(f"--data {path}: dataset '{key}' has dtype {ds.dtype}, expected "
                        f"integers{hint}")
    if numeric and kind not in "iuf":
        raise DataError(
            f"--data {path}: dataset '{key}' has non-numeric dtype {ds.dtype}; store numbers"
        )
    return ds


def class_labels(f: Any, key: str, path: str) -> tuple[np.ndarray, str | None, int | None]:
    """A user's class labels ``f[key]`` as ``(N,)`` int64, with how they were stored where
    that was not ``(N,)`` integers (a column, one-hot rows, whole numbers as floats: the forms
    numpy, pandas and Keras-style code write) and the one-hot width; anything else (text,
    fractions, rows that are not one-hot) raises :class:`DataError` naming the fix."""
    ds = require_dataset(f, key, path, numeric=False)
    kind = ds.dtype.kind
    if kind not in "iuf":
        what = "text" if kind in "SUO" else "no numbers"
        raise DataError(f"--data {path}: dataset '{key}' holds {what} (dtype {ds.dtype}); "
                        "store class numbers as integers, one per sample (see README 'Data')")
    shape = ds.shape
    how, width = None, None
    if len(shape) == 2 and shape[1] == 1:
        y, how = read_rows(ds, path, key)[:, 0], f"a column {shape}"
    elif len(shape) == 2 and shape[1] > 1:
        width, how = shape[1], f"one-hot rows over {shape[1]} classes"
        y = np.empty(shape[0], np.int64)
        step = max(1, 2**24 // shape[1])  # rows per read: about 16 M values
        for begin in range(0, shape[0], step):
            block = read_rows(ds, path, key, begin, begin + step)
            hot = block == 1
            if not (np.all(hot.sum(axis=1) == 1) and np.all(hot | (block == 0))):
                raise DataError(f"--data {path}: dataset '{key}' has shape {shape}, and its "
                                "rows are not one-hot; store one class number per sample, "
                                f"shape ({shape[0]},)")
            y[begin : begin + len(block)] = hot.argmax(axis=1)
    elif len(shape) != 1:
        raise DataError(f"--data {path}: dataset '{key}' has shape {shape}; store one class "
                        f"number per sample, shape ({shape[0] if shape else 'N'},)")
    else:
        y = read_rows(ds, path, key)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise DataError(f"--data {path}: dataset '{key}' holds {float(y[bad][0]):g} (row "
                            f"{int(np.argmax(bad))}); class labels are whole numbers")
        how = how or f"whole numbers as {ds.dtype}"
    return y.astype(np.int64), how, width


def read_rows(ds: Any, path: str, key: str, start: int = 0, stop: int | None = None
              ) -> np.ndarray:
    """``ds[start:stop]`` (all of ``ds`` by default) as an array; a read HDF5 fails (a
    damaged or cut compressed chunk, a filter that fails to decode it) raises
    :class:`DataError` naming the rows."""
    try:
        return np.asarray(ds[start:stop] if ds.shape else ds[()])
    except OSError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        rows = ds.shape[0] if ds.shape else 1
        stop = rows if stop is None else min(stop, rows)
        raise DataError(f"--data {path}: HDF5 cannot read rows {start}..{stop - 1} of "
                        f"'{key}' ({reason}); the file is damaged: re-create or re-copy "
                        "it") from None


def check_finite(ds: Any, path: str, key: str, chunk_rows: int = 4096) -> None:
    """Scan ``ds`` in row chunks and raise :class:`DataError` on the first NaN or inf, or on
    rows HDF5 cannot decode. Integers are read only where they are compressed (the one way
    their reading can fail after the file opened)."""
    floats = ds.dtype.kind == "f"
    if not floats and not ds.id.get_create_plist().get_nfilters():
        return
    for start in range(0, ds.shape[0], chunk_rows):
        block = read_rows(ds, path, key, start, start + chunk_rows)
        if floats and not np.isfinite(block).all():
            bad = start + int(np.argwhere(~np.isfinite(block.reshape(block.shape[0], -1)))[0, 0])
            raise DataError(
                f"--data {path}: dataset '{key}' holds NaN or inf (first at row {bad}); "
                "clean or drop those samples"
            )


def maps_in_place(ds: Any) -> bool:
    """Whether ``numpy.memmap`` can read dataset ``ds`` where it lies (contiguous, not
    compressed, not virtual, its bytes allocated in a plain file), so that every process
    reading it shares one copy in the page cache; other datasets are read into each process's
    memory."""
    if ds.chunks is not None or ds.compression is not None or ds.is_virtual:
        return False
    # an external link's dataset lives in another file: that file is mapped, at its offset
    return ds.id.get_offset() is not None and os.path.isfile(ds.file.filename)


def memmap_dataset(path: str, key: str) -> np.ndarray:
    """A read-only view of ``path[key]``: ``numpy.memmap`` when the dataset is contiguous and
    uncompressed (the fast, shared path), an in-memory copy otherwise (chunked/compressed)."""
    with read_h5(path) as f:
        ds = f[key]
        if maps_in_place(ds):
            return native_byte_order(np.memmap(ds.file.filename, dtype=ds.dtype, mode="r",
                                               offset=ds.id.get_offset(), shape=ds.shape))
        return native_byte_order(read_rows(ds, str(path), key))


def native_byte_order(array: np.ndarray) -> np.ndarray:
    """``array`` itself when its numbers are in this machine's byte order, else a converted
    copy: torch refuses big-endian arrays, which some instruments and Java/IDL writers store.
    A memory map stays a map (converted batch by batch in :meth:`DataSplits.batch`)."""
    if array.dtype.isnative or isinstance(array, np.memmap):
        return array
    return array.astype(array.dtype.newbyteorder("="))
