"""Powder X-ray diffraction patterns (seed 003): schema, reader, synthetic default, importer.

HDF5 schema (one file; all datasets contiguous and uncompressed so they can be memory-mapped):

================  ==========  =====================================================
dataset           shape       meaning
================  ==========  =====================================================
``patterns``      (N, L)      intensities on a common 2θ grid, any float dtype
``labels``        (N,)        integer class per pattern (see ``label_set``)
``two_theta``     (L,)        optional: the 2θ grid in degrees
================  ==========  =====================================================

File attribute ``label_set``: ``bravais`` (default; 0..13 in the order of
:data:`datasets.xrd_physics.BRAVAIS_LATTICES`), ``crystal_system`` (0..6) or
``space_group`` (1..230). A ``bravais`` file can be trained on crystal systems with
``--data-option labels=crystal_system``.

The seed's own format, a torch ``.pt`` dict ``{'X': (N, L) or (N, 1, L), 'Y': (N,) or one-hot
(N, C)}``, is imported into the cache once per content and label options (read with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects; the cache file
records ``imported_from`` and ``source_sha256``). Its labels may be Bravais lattices or space
groups, numbered from 0 or 1: ``--data-option label_set=bravais|space_group`` and
``label_base=0|1`` say which; what is not given is inferred from the labels and announced
(``data: assuming ...`` on stderr), and labels that cannot be what the options say are refused
naming the file. An HDF5 file without a ``label_set`` attribute is read as Bravais (announced);
the same options describe its labels, and where they differ from the schema's numbering trials
read a converted copy in the cache (the user's file is never modified).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from datasets import importing, register
from datasets.base import (
    DataError,
    DataInfo,
    DatasetSpec,
    DataSplits,
    atomic_h5,
    cache_dir,
    cache_key,
    check_finite,
    check_room,
    class_labels,
    int_option,
    memmap_dataset,
    no_such_data,
    open_h5,
    read_h5,
    reject_unknown_options,
    require_dataset,
    split_indices,
)
from datasets.xrd_physics import (
    BRAVAIS_LATTICES,
    BRAVAIS_TO_SYSTEM,
    CRYSTAL_SYSTEMS,
    INTENSITIES,
    ORIENTATIONS,
    PatternGrid,
    simulate_patterns,
)

GENERATOR_VERSION = 1
#: changes when the conversion of a user's file into the cache does
IMPORT_VERSION = 2
DEFAULT_SAMPLES = 4000
DEFAULT_INTENSITIES = "structure"
MIN_LENGTH = 64
LABEL_SETS = {
    "bravais": tuple(BRAVAIS_LATTICES),
    "crystal_system": tuple(CRYSTAL_SYSTEMS),
    "space_group": tuple(str(i) for i in range(1, 231)),
}
#: the label sets a user's file may be declared in with --data-option label_set
IMPORT_LABEL_SETS = ("bravais", "space_group")
LABEL_NAMES = {"bravais": "Bravais classes", "crystal_system": "crystal systems",
               "space_group": "space groups"}
OPTIONS = {
    "labels": "bravais (14 classes, default) or crystal_system (7)",
    "label_set": "what the labels of a .pt file (or an HDF5 file without a label_set "
                 "attribute) are: bravais (14 lattices) or space_group (230); inferred from "
                 "the labels and announced when not given",
    "label_base": "0 or 1: whether those labels count from 0 or from 1 (space groups 1..230 "
                  "are 1-based); inferred from the labels and announced when not given",
    "length": "points per synthetic pattern (default 2048)",
    "data_seed": "seed of the synthetic set and of the train/val/test split (default 0)",
    "intensities": "structure (default: from atoms of a random crystal structure in a space "
                   "group of the lattice) or random (|F|^2 drawn per line, the old default)",
    "orientation": "none (default) or march: March-Dollase preferred orientation along a "
                   "random low-index axis, r 0.6-1.67 (needs intensities=structure)",
}


def _data_seed(options: Mapping[str, str]) -> int:
    return int_option(options, "data_seed", 0)


def generate(samples: int, seed: int, grid: PatternGrid, path: Path,
             intensities: str = DEFAULT_INTENSITIES, orientation: str = "none") -> None:
    """Write a class-balanced synthetic set of ``samples`` patterns to ``path`` atomically."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(samples) % len(BRAVAIS_LATTICES)).astype(np.int64)
    with tqdm(total=samples, desc="simulating XRD patterns", unit="pattern") as bar:
        patterns = simulate_patterns(labels, seed, grid, progress=bar.update,
                                     intensities=intensities, orientation=orientation)
    with atomic_h5(path) as f:
        f.create_dataset("patterns", data=patterns.astype(np.float32))
        f.create_dataset("labels", data=labels)
        f.create_dataset("two_theta", data=grid.two_theta())
        f.attrs["label_set"] = "bravais"
        f.attrs["generator"] = f"scitune xrd v{GENERATOR_VERSION}"
        f.attrs["wavelength_angstrom"] = grid.wavelength
        f.attrs["intensities"] = intensities
        f.attrs["orientation"] = orientation


def validate(path: str) -> None:
    """Check an XRD HDF5 file against the schema; raise :class:`DataError` naming the fault."""
    with open_h5(path) as f:
        patterns = require_dataset(f, "patterns", path, ndim=2)
        labels = require_dataset(f, "labels", path, ndim=1, integer=True)
        n, length = patterns.shape
        if n == 0:
            raise DataError(f"--data {path}: 'patterns' holds zero samples")
        if labels.shape[0] != n:
            hint = ""
            if length == labels.shape[0]:  # (L, N), as MATLAB and Fortran writers lay it out
                hint = (f"; 'patterns' looks transposed, one pattern per column: store it as "
                        f"({length}, {n}), one pattern per row (numpy: patterns.T)")
            raise DataError(
                f"--data {path}: 'patterns' has {n} rows but 'labels' has {labels.shape[0]}; "
                f"they must match{hint}"
            )
        if length < MIN_LENGTH:
            raise DataError(
                f"--data {path}: patterns have {length} points, need at least {MIN_LENGTH}"
            )
        label_set = str(f.attrs.get("label_set", "bravais"))
        if label_set not in LABEL_SETS:
            raise DataError(
                f"--data {path}: attribute label_set={label_set!r}; use one of "
                f"{', '.join(LABEL_SETS)}"
            )
        y = labels[()]
        lo, hi = (1, 230) if label_set == "space_group" else (0, len(LABEL_SETS[label_set]) - 1)
        if y.min() < lo or y.max() > hi:
            raise DataError(
                f"--data {path}: labels range {y.min()}..{y.max()} outside {lo}..{hi} "
                f"for label_set {label_set!r}"
            )
        if "two_theta" in f and f["two_theta"].shape != (length,):
            raise DataError(f"--data {path}: 'two_theta' must have shape ({length},)")
        check_finite(patterns, path, "patterns")


def _label_options(options: Mapping[str, str]) -> tuple[str | None, int | None]:
    """The ``label_set`` and ``label_base`` the user gave (``None`` where not given)."""
    label_set = options.get("label_set")
    if label_set is not None and label_set not in IMPORT_LABEL_SETS:
        raise DataError(f"--data-option label_set must be one of {', '.join(IMPORT_LABEL_SETS)}")
    base = options.get("label_base")
    if base is not None and base not in ("0", "1"):
        raise DataError("--data-option label_base must be 0 or 1")
    return label_set, None if base is None else int(base)


def _check_range(path: str, label_set: str, base: int, lo: int, hi: int) -> None:
    """Raise :class:`DataError` naming ``path`` and the fix unless labels ``lo..hi`` fit
    ``base``-based classes of ``label_set``."""
    top = base + len(LABEL_SETS[label_set]) - 1
    if base <= lo and hi <= top:
        return
    fixes = []
    if base == 1 and lo == 0:
        fixes.append("labels include 0, so they do not count from 1: use --data-option "
                     "label_base=0")
    if base == 0 and lo >= 1 and hi == top + 1:
        fixes.append("if they count from 1, use --data-option label_base=1")
    if label_set == "bravais" and top < hi <= 230:
        fixes.append("if they are space groups, use --data-option label_set=space_group")
    raise DataError(
        f"--data {path}: labels range {lo}..{hi} outside {base}..{top} for {base}-based "
        f"label_set {label_set!r}; "
        f"{'; or '.join(fixes) or 'check the labels and --data-option label_set / label_base'}"
    )


def resolve_labels(path: str, lo: int, hi: int, options: Mapping[str, str],
                   default_set: str | None = None, one_hot: int | None = None
                   ) -> tuple[str, int, list[str]]:
    """``(label_set, label_base, assumed)`` of a user's labels spanning ``lo..hi``: the
    ``--data-option``s where given, else inferred (``assumed`` names the options inferred).

    Without ``label_set``: ``default_set`` where given (an HDF5 file without the attribute
    is Bravais by its schema), else the width of one-hot labels (14 or 230 columns), else
    Bravais when the labels fit 0..13 or 1..14 and space groups otherwise. Without
    ``label_base``: 0 for one-hot labels over 14 or 230 columns; for Bravais 1 only when the
    labels reach 14 and hold no 0; for space groups 0 only when a 0 is present. A choice the labels make
    impossible raises :class:`DataError` naming ``path`` and the fix."""
    label_set, base = _label_options(options)
    if lo < 0:
        raise DataError(f"--data {path}: labels include {lo}; class labels must be >= 0")
    assumed = []
    if label_set is None:
        assumed.append("label_set")
        if default_set is not None:
            label_set = default_set
        elif base is not None:
            label_set = "bravais" if hi - base <= 13 else "space_group"
        elif one_hot in (14, 230):
            label_set = "bravais" if one_hot == 14 else "space_group"
        else:
            label_set = "bravais" if hi <= 13 or (hi == 14 and lo >= 1) else "space_group"
    if base is None:
        assumed.append("label_base")
        if one_hot in (14, 230):
            base = 0
        elif label_set == "bravais":
            base = 1 if lo >= 1 and hi == 14 else 0
        else:
            base = 0 if lo == 0 else 1
    _check_range(path, label_set, base, lo, hi)
    return label_set, base, assumed


def _announce(path: str, label_set: str, base: int, lo: int, hi: int, assumed: list[str],
              why: str = "") -> None:
    """Print (once) the label convention that was assumed and the options that say otherwise."""
    if not assumed:
        return
    others = []
    if "label_base" in assumed:
        others.append(f"label_base={1 - base}")
    if "label_set" in assumed:
        others.append(f"label_set={'space_group' if label_set == 'bravais' else 'bravais'}")
    top = base + len(LABEL_SETS[label_set]) - 1
    importing.assume(
        f"labels of {path}{why} are {base}-based {LABEL_NAMES[label_set]} {base}..{top} "
        f"(found {lo}..{hi}; --data-option {' / '.join(others)} to say otherwise)"
    )


def _import_options(options: Mapping[str, str]) -> dict[str, str]:
    """The label options as given (``auto`` where inferred): part of the cache key."""
    label_set, base = _label_options(options)
    return {"label_set": label_set or "auto", "label_base": "auto" if base is None else str(base)}


def _write_labels(f, y: np.ndarray, label_set: str, base: int, lo: int, hi: int) -> None:
    """Store ``base``-based labels ``y`` in the schema's numbering (space groups 1-based,
    other sets 0-based) with the convention they were read in."""
    stored = y.astype(np.int64) - base + (1 if label_set == "space_group" else 0)
    f.create_dataset("labels", data=stored)
    f.attrs["label_set"] = label_set
    f.attrs["source_label_base"] = base
    f.attrs["source_label_min"] = lo
    f.attrs["source_label_max"] = hi


def _read_torch_file(path: str) -> tuple[np.ndarray, np.ndarray, int | None]:
    """``(X as (N, L), integer labels (N,), one-hot width or None)`` of the seed's file."""
    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a data problem
        raise DataError(
            f"--data {path}: not a loadable torch file of tensors ({type(exc).__name__}); "
            "save it as torch.save({'X': tensor, 'Y': tensor})"
        ) from None
    if not isinstance(blob, dict) or "X" not in blob or "Y" not in blob:
        raise DataError(f"--data {path}: expected a dict with keys 'X' and 'Y'")
    x = np.asarray(blob["X"].numpy() if hasattr(blob["X"], "numpy") else blob["X"])
    y = np.asarray(blob["Y"].numpy() if hasattr(blob["Y"], "numpy") else blob["Y"])
    if x.ndim == 3 and x.shape[1] == 1:
        x = x[:, 0, :]
    one_hot = None
    if y.ndim == 2 and y.shape[1] == 1:  # a column of labels
        y = y[:, 0]
    elif y.ndim == 2:  # one-hot
        one_hot = y.shape[1]
        y = y.argmax(axis=1)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DataError(
            f"--data {path}: X has shape {x.shape} and Y {y.shape}; expected (N, L) and (N,)"
        )
    if x.dtype.kind not in "iuf" or y.dtype.kind not in "iuf":
        raise DataError(f"--data {path}: X and Y must be numeric")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"--data {path}: Y must hold integer class labels")
    if y.shape[0] == 0:
        raise DataError(f"--data {path}: X and Y hold zero samples")
    return x, y.astype(np.int64), one_hot


def import_torch_file(path: str, options: Mapping[str, str] | None = None) -> str:
    """Convert the seed's ``{'X','Y'}`` torch file into a cached HDF5 file; return its path.

    The cache entry is keyed by the file's content and the label options; the label
    convention (``label_set``/``label_base``) is taken from the options or inferred from the
    labels and announced."""
    options = options or {}
    import_options = _import_options(options)

    def write(f, files) -> None:
        x, y, one_hot = _read_torch_file(path)
        lo, hi = int(y.min()), int(y.max())
        label_set, base, _ = resolve_labels(path, lo, hi, options, one_hot=one_hot)
        f.create_dataset("patterns", data=x.astype(np.float32))
        _write_labels(f, y, label_set, base, lo, hi)

    target = importing.import_once(source=path, files=[Path(path)], importer="xrd",
                                   version=IMPORT_VERSION, write=write, validate=validate,
                                   options=import_options)
    with read_h5(target) as f:
        label_set = str(f.attrs["label_set"])
        base = int(f.attrs["source_label_base"])
        lo, hi = int(f.attrs["source_label_min"]), int(f.attrs["source_label_max"])
    assumed = [k for k, v in import_options.items() if v == "auto"]
    _announce(path, label_set, base, lo, hi, assumed)
    return target


def _prepare_h5(path: str, options: Mapping[str, str]) -> str:
    """A user's HDF5 file as trials read it: the file itself when its labels follow the
    schema's numbering, else a converted copy in the cache (the user's file is never
    modified). Without a ``label_set`` attribute the file is Bravais by the schema, announced
    with the options that say otherwise."""
    with open_h5(path) as f:
        rows = require_dataset(f, "patterns", path, ndim=2).shape[0]
        y, stored_as, one_hot = class_labels(f, "labels", path)
        declared = f.attrs.get("label_set")
        declared = None if declared is None else str(declared)
    if stored_as is not None and y.shape[0] != rows:
        raise DataError(f"--data {path}: 'patterns' has {rows} rows but 'labels' has "
                        f"{y.shape[0]}; they must match")
    if y.size == 0 or (declared is not None and declared not in LABEL_SETS):
        validate(path)  # raises: zero samples or an unknown label_set attribute
    lo, hi = int(y.min()), int(y.max())
    given_set, given_base = _label_options(options)
    why = ""
    if declared is not None:
        if given_set is not None and given_set != declared:
            raise DataError(
                f"--data {path}: the file's label_set attribute is {declared!r} but "
                f"--data-option label_set={given_set}; drop the option or fix the attribute"
            )
        schema_base = 1 if declared == "space_group" else 0
        label_set, base, assumed = declared, schema_base, []
        if given_base is not None and given_base != schema_base:
            base = given_base
        _check_range(path, label_set, base, lo, hi)
    else:
        why = " (no label_set attribute)"
        label_set, base, assumed = resolve_labels(
            path, lo, hi, options, default_set=None if one_hot else "bravais", one_hot=one_hot)
    if stored_as is not None:
        importing.assume(f"the labels of {path} (stored as {stored_as}) hold one class per "
                         "sample; they are read into the cache as the schema's (N,) integers")
    if stored_as is None and base == (1 if label_set == "space_group" else 0) \
            and label_set == (declared or "bravais"):
        validate(path)
        _announce(path, label_set, base, lo, hi, assumed, why)
        return os.path.abspath(path)

    def write(f, files) -> None:
        with open_h5(path) as src:
            patterns = src["patterns"]
            out = f.create_dataset("patterns", shape=patterns.shape, dtype=patterns.dtype)
            rows = max(1, 2**26 // max(1, patterns.shape[1] * patterns.dtype.itemsize))
            for start in range(0, patterns.shape[0], rows):
                out[start : start + rows] = patterns[start : start + rows]
            if "two_theta" in src:
                f.create_dataset("two_theta", data=src["two_theta"][()])
            for key, value in src.attrs.items():
                if key != "label_set":
                    f.attrs[key] = value
            _write_labels(f, y, label_set, base, lo, hi)

    target = importing.import_once(source=path, files=[Path(path)], importer="xrd",
                                   version=IMPORT_VERSION, write=write, validate=validate,
                                   options=_import_options(options))
    _announce(path, label_set, base, lo, hi, assumed, why)
    return target


def prepare(path: str | None, samples: int, seed: int, options: Mapping[str, str]) -> str:
    """Validate, import or generate; return the HDF5 file trials will read."""
    reject_unknown_options(options, OPTIONS)
    labels = options.get("labels", "bravais")
    if labels not in ("bravais", "crystal_system"):
        raise DataError("--data-option labels must be bravais or crystal_system")
    _label_options(options)
    if path is None:
        if "label_set" in options or "label_base" in options:
            raise DataError("--data-option label_set / label_base describe a --data file; "
                            "the synthetic set needs neither")
        try:
            length = int(options.get("length", PatternGrid().length))
        except ValueError:
            raise DataError("--data-option length must be an integer") from None
        if length < 256:
            raise DataError("--data-option length must be at least 256")
        if samples < 3 * len(BRAVAIS_LATTICES):
            raise DataError(f"--samples must be at least {3 * len(BRAVAIS_LATTICES)} for xrd")
        intensities = options.get("intensities", DEFAULT_INTENSITIES)
        if intensities not in INTENSITIES:
            raise DataError(f"--data-option intensities must be one of {', '.join(INTENSITIES)}")
        orientation = options.get("orientation", "none")
        if orientation not in ORIENTATIONS:
            raise DataError(
                f"--data-option orientation must be one of {', '.join(ORIENTATIONS)}")
        if orientation != "none" and intensities != "structure":
            raise DataError("--data-option orientation=march needs intensities=structure "
                            "(texture acts on reflections of a crystal structure)")
        grid = PatternGrid(length=length)
        data_seed = _data_seed(options)
        extra = {"intensities": intensities} if intensities != "random" else {}
        if orientation != "none":
            extra["orientation"] = orientation
        key = cache_key(v=GENERATOR_VERSION, n=samples, seed=data_seed, grid=grid, **extra)
        target = cache_dir() / f"xrd-{samples}-{key}.h5"
        if not target.exists():
            # float32 pattern, int64 label; peak RSS grew 5.0× the file's size (1000 vs 3000 samples)
            check_room(target, samples, grid.length * 4 + 8, memory_factor=5.0,
                       fewest=3 * len(BRAVAIS_LATTICES))
            generate(samples, data_seed, grid, target, intensities, orientation)
        return str(target)
    if not os.path.exists(path):
        raise no_such_data(path)
    if Path(path).suffix in (".pt", ".pth"):
        prepared = import_torch_file(path, options)
    else:
        prepared = _prepare_h5(path, options)
    if labels == "crystal_system":
        with open_h5(prepared) as f:
            if str(f.attrs.get("label_set", "bravais")) != "bravais":
                raise DataError(
                    f"--data {path}: labels=crystal_system needs a file with Bravais labels"
                )
    return os.path.abspath(prepared)


def load(path: str, seed: int, options: Mapping[str, str]) -> DataSplits:
    """Memory-map a prepared file and split it (split fixed by ``data_seed``)."""
    x = memmap_dataset(path, "patterns")
    y = np.asarray(memmap_dataset(path, "labels"), dtype=np.int64)
    with read_h5(path) as f:
        label_set = str(f.attrs.get("label_set", "bravais"))
    if label_set == "space_group":
        y = y - 1
    names = LABEL_SETS[label_set]
    if options.get("labels", "bravais") == "crystal_system" and label_set == "bravais":
        y = BRAVAIS_TO_SYSTEM[y]
        names = LABEL_SETS["crystal_system"]
    train, val, test = split_indices(len(y), _data_seed(options))
    info = DataInfo(input_shape=(1, x.shape[1]), num_classes=len(names), class_names=names)
    return DataSplits({"x": x, "y": y}, train, val, test, info, source=path)


register(
    DatasetSpec(
        name="xrd",
        prepare=prepare,
        load=load,
        description="powder XRD patterns, 14 Bravais lattices (synthetic Cu Kα default)",
        options=OPTIONS,
        default_samples=DEFAULT_SAMPLES,
    )
)
