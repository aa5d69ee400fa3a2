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
(N, C)}``, is imported into the cache (read with ``torch.load(weights_only=True)``, which
refuses arbitrary pickled objects).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from datasets import register
from datasets.base import (
    DataError,
    DataInfo,
    DatasetSpec,
    DataSplits,
    atomic_h5,
    cache_dir,
    cache_key,
    check_finite,
    int_option,
    memmap_dataset,
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
DEFAULT_SAMPLES = 4000
DEFAULT_INTENSITIES = "structure"
MIN_LENGTH = 64
LABEL_SETS = {
    "bravais": tuple(BRAVAIS_LATTICES),
    "crystal_system": tuple(CRYSTAL_SYSTEMS),
    "space_group": tuple(str(i) for i in range(1, 231)),
}
OPTIONS = {
    "labels": "bravais (14 classes, default) or crystal_system (7)",
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
            raise DataError(
                f"--data {path}: 'patterns' has {n} rows but 'labels' has {labels.shape[0]}; "
                "they must match"
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


def import_torch_file(path: str) -> str:
    """Convert the seed's ``{'X','Y'}`` torch file into a cached HDF5 file; return its path."""
    import torch

    stat = os.stat(path)
    key = cache_key(p=os.path.abspath(path), s=stat.st_size, m=stat.st_mtime_ns)
    target = cache_dir() / f"xrd-import-{key}.h5"
    if target.exists():
        return str(target)
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
    if y.ndim == 2:  # one-hot
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
    y = y.astype(np.int64)
    label_set = "bravais" if y.max(initial=0) < 14 else "space_group"
    with atomic_h5(target) as f:
        f.create_dataset("patterns", data=x.astype(np.float32))
        f.create_dataset("labels", data=y)
        f.attrs["label_set"] = label_set
        f.attrs["imported_from"] = os.path.abspath(path)
    try:
        validate(str(target))
    except DataError:
        target.unlink(missing_ok=True)
        raise
    return str(target)


def prepare(path: str | None, samples: int, seed: int, options: Mapping[str, str]) -> str:
    """Validate, import or generate; return the HDF5 file trials will read."""
    reject_unknown_options(options, OPTIONS)
    labels = options.get("labels", "bravais")
    if labels not in ("bravais", "crystal_system"):
        raise DataError("--data-option labels must be bravais or crystal_system")
    if path is None:
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
            generate(samples, data_seed, grid, target, intensities, orientation)
        return str(target)
    if not os.path.exists(path):
        raise DataError(f"--data {path}: no such file; check the path")
    if Path(path).suffix in (".pt", ".pth"):
        path = import_torch_file(path)
    validate(path)
    if labels == "crystal_system":
        with open_h5(path) as f:
            if str(f.attrs.get("label_set", "bravais")) != "bravais":
                raise DataError(
                    f"--data {path}: labels=crystal_system needs a file with Bravais labels"
                )
    return os.path.abspath(path)


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
