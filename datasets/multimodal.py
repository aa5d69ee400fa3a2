"""Subjects with a 3D volume and a phenotype vector, and a binary label (seed 004).

================  ==============  ===============================================
dataset           shape           meaning
================  ==============  ===============================================
``volumes``       (N, D, H, W)    scan intensities (float or int)
``phenotypes``    (N, P)          phenotype features, numbers (categories coded)
``labels``        (N,)            0 / 1 diagnosis (integers, or floats 0.0 / 1.0)
``split``         (N,)            optional: 0 train, 1 validation, 2 test
================  ==============  ===============================================

Volumes (contiguous) are memory-mapped. Model input per batch: volumes reduced to the input
resolution (below), standardised with the training split's mean and standard deviation,
shape (B, 1, D', H', W'); phenotypes standardised per feature. The synthetic default
(``datasets/multimodal_physics.py``, ``size=32`` → 32³) puts label information in localised
structure of the volume and in a few phenotype features, so a model using both beats either
alone.

**The CS 273B project's own files, read directly.** Its converter
(``create_brain_binaries.py``) writes one ``.bin`` file per subject: little-endian float32
records ``[label, 29 phenotype values, 91·109·91 voxels]``, the voxels in C order of the
(91, 109, 91) array (what its reader ``input_brain.read_binary`` reshapes them to), the label
1.0 or 0.0; and JSON lists of the train and test files (``train2.json``, ``test2.json``:
paths on the machine that wrote them, matched here by file name). ``--data`` may be one
``.bin`` file (one or more records), a folder of them, or a folder holding them and one
train and one test list; converted once into the layout above (:func:`import_bin`). With the
lists, the train list is the training split less a seeded validation part (``data_seed``,
printed) and the test list is the test split; without, the usual seeded split. The seed's
CAE-reduced binaries (31×37×31 volumes) are recognised by their size.

**Input resolution** (``--data-option resolution``). The seed trained its CAE on the full
91×109×91 volumes and every other model on 31×37×31 volumes: the code of that CAE, a
stride-3 3³ convolution with TensorFlow's ``'SAME'`` padding (``cae_run.py``; 91 → 31,
109 → 37), i.e. a learned block reduction. The fixed counterpart used here is the block mean
with the same geometry: output voxel i of an axis of n voxels averages the in-volume input
voxels i·f − p … i·f − p + f − 1, with f the factor, ceil(n/f) outputs and p = (ceil(n/f)·f −
n) // 2 (f = 3: voxels 3i−1 … 3i+1). ``resolution=auto`` (the default) reduces 91×109×91
volumes by 3 to the seed's 31×37×31 and leaves other shapes whole; ``full`` never reduces;
an integer f reduces by f. At 91×109×91 the fully connected ``mlp_ae`` is ~0.9-1.9 B
parameters, beyond most GPUs.

``--data-option cnn_experiment=NAME`` / ``pheno_experiment=NAME``: the multimodal ``mmnn``
starts its branches from the best checkpoints of those earlier ``cnn`` / ``pheno_nn``
searches (read from the same MLflow store by the search layer, :mod:`search.stages`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets import importing, register
from datasets.base import (
    DataError,
    DataInfo,
    DatasetSpec,
    DataSplits,
    UpstreamModel,
    atomic_h5,
    cache_dir,
    cache_key,
    check_finite,
    check_room,
    int_option,
    memmap_dataset,
    no_such_data,
    open_h5,
    reject_unknown_options,
    require_dataset,
    split_indices,
)

GENERATOR_VERSION = 1
DEFAULT_SAMPLES = 1200
STATS_SUBJECTS = 128
#: the CS 273B binaries: 1 label, 29 phenotype values, then the volume (float32 each)
BIN_PHENOTYPES = 29
BIN_HEADER = 1 + BIN_PHENOTYPES
FULL_SHAPE = (91, 109, 91)
#: the volumes of the seed's CAE-reduced binaries, and the factor that makes them from FULL
REDUCED_SHAPE = (31, 37, 31)
SEED_FACTOR = 3
BIN_IMPORTER = "cs273b-bin"
BIN_IMPORT_VERSION = 1
#: share of the train list's subjects held out for validation
VAL_FRACTION = 0.15
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
OPTIONS = {
    "size": "edge of the synthetic volumes in voxels (default 32)",
    "data_seed": "seed of the synthetic set, of the train/val/test split and of the validation "
                 "part split off a CS 273B train list (default 0)",
    "resolution": "input resolution: auto (default: 91x109x91 volumes reduced by 3 to the "
                  "seed's 31x37x31, other shapes whole), full, or an integer f: the mean of "
                  "each f³ block (stride f, TensorFlow 'SAME' windows, as the seed's stride-3 "
                  "reduction)",
    "volume_shape": "DxHxW of the volumes in CS 273B .bin files (default 91x109x91, or the "
                    "seed's CAE-reduced 31x37x31 when the file sizes fit only that)",
    "split_lists": "TRAIN.json,TEST.json: the seed's split lists to use when the --data folder "
                   "holds several (paths relative to it)",
    "cnn_experiment": "mmnn: start the volume branch from this 'cnn' search's best checkpoint",
    "pheno_experiment": "mmnn: start the phenotype branch from this 'pheno_nn' search's best",
}
INIT_OPTIONS = {"cnn_experiment": ("cnn", "cnn"), "pheno_experiment": ("pheno", "pheno_nn")}


def generate(samples: int, size: int, seed: int, path: os.PathLike[str] | str) -> None:
    """Write a synthetic multimodal set atomically."""
    from tqdm import tqdm

    from datasets.multimodal_physics import PHENOTYPE_NAMES, simulate_subjects

    with tqdm(total=samples, desc=f"simulating {size}³ subjects", unit="subject") as bar:
        subjects = simulate_subjects(samples, seed, shape=(size, size, size), progress=bar.update)
    with atomic_h5(path) as f:
        f.create_dataset("volumes", data=subjects["volumes"].astype(np.float32))
        f.create_dataset("phenotypes", data=subjects["phenotypes"].astype(np.float32))
        f.create_dataset("labels", data=subjects["labels"].astype(np.int64))
        f.attrs["phenotype_names"] = json.dumps(list(PHENOTYPE_NAMES))
        f.attrs["generator"] = f"scitune multimodal v{GENERATOR_VERSION}"


def _check_labels(values: np.ndarray, where: str) -> None:
    """0 / 1 labels, as integers or as the floats 0.0 / 1.0 the seed's converter writes."""
    bad = values[(values != 0) & (values != 1)]
    if bad.size:
        found = sorted({float(v) if values.dtype.kind == "f" else int(v) for v in bad[:1000]},
                       key=str)[:5]
        raise DataError(f"--data {where}: labels must be 0 or 1 (found {found})")


def validate(path: str) -> int:
    """Check a user's file; return the number of subjects. Raises DataError."""
    with open_h5(path) as f:
        volumes = require_dataset(f, "volumes", path, ndim=4)
        phenotypes = require_dataset(f, "phenotypes", path, ndim=2)
        labels = require_dataset(f, "labels", path, ndim=1)
        n = volumes.shape[0]
        if n < 3:
            raise DataError(f"--data {path}: {n} subjects; need at least 3 for train/val/test")
        for key, ds in (("phenotypes", phenotypes), ("labels", labels)):
            if ds.shape[0] != n:
                raise DataError(f"--data {path}: 'volumes' has {n} subjects but '{key}' has "
                                f"{ds.shape[0]}; they must match")
        if min(volumes.shape[1:]) < 8:
            raise DataError(f"--data {path}: volumes are {volumes.shape[1:]}; need at least 8³")
        _check_labels(labels[()], path)
        if "split" in f:
            split = require_dataset(f, "split", path, ndim=1, integer=True)
            if split.shape[0] != n:
                raise DataError(f"--data {path}: 'volumes' has {n} subjects but 'split' has "
                                f"{split.shape[0]}; they must match")
            codes = split[()]
            if not set(np.unique(codes).tolist()) <= {0, 1, 2}:
                raise DataError(f"--data {path}: 'split' must hold 0 (train), 1 (validation) "
                                f"or 2 (test)")
            train = int((codes == 0).sum())
            if not (codes == 2).any() or train < (1 if (codes == 1).any() else 2):
                raise DataError(f"--data {path}: 'split' needs test subjects (2) and training "
                                f"subjects (0) to train and validate on; it has "
                                f"{train} / {int((codes == 1).sum())} / {int((codes == 2).sum())}")
        check_finite(volumes, path, "volumes", chunk_rows=64)
        check_finite(phenotypes, path, "phenotypes")
        return n


def stored_splits(path: str, n: int, seed: int, source: str | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The train/val/test subjects: the file's ``split`` (a training set without validation
    subjects gives a seeded ``VAL_FRACTION`` of them, printed when ``source`` is given), else
    the usual seeded split."""
    with open_h5(path) as f:
        codes = np.asarray(f["split"][()]) if "split" in f else None
    if codes is None:
        return split_indices(n, seed)
    train, val, test = (np.flatnonzero(codes == c).astype(np.int64) for c in (0, 1, 2))
    if val.size == 0:
        order = np.random.default_rng(seed).permutation(train)
        n_val = min(max(1, round(VAL_FRACTION * train.size)), train.size - 1)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        if source is not None:
            importing.assume(
                f"the {train.size + val.size} training subjects of {source} (its train list) "
                f"split into {train.size} to train on and {val.size} to validate on (a seeded "
                f"{VAL_FRACTION:.0%}, data_seed={seed}); its {test.size} test subjects are the "
                "test split; --data-option data_seed=N draws another validation part")
    return train, val, test


# -- the CS 273B .bin files -------------------------------------------------------------------

def _shape_option(options: Mapping[str, str]) -> tuple[int, int, int] | None:
    text = options.get("volume_shape")
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"--data-option volume_shape={text}: expected DxHxW, e.g. 91x109x91")
    return shape  # type: ignore[return-value]


def record_bytes(shape: Sequence[int]) -> int:
    """Bytes of one ``[label, phenotypes, voxels]`` float32 record."""
    return 4 * (BIN_HEADER + math.prod(shape))


def _fits(size: int, shape: Sequence[int]) -> bool:
    return size > 0 and size % record_bytes(shape) == 0


def bin_volume_shape(files: Sequence[Path], options: Mapping[str, str]) -> tuple[int, int, int]:
    """The volume shape of the records of ``files``: ``volume_shape``, else full size or the
    seed's reduced one (announced), whichever every file's size is a whole number of records
    of; a file that fits none is refused by name with the record size expected."""
    given = _shape_option(options)
    sizes = [(f, f.stat().st_size) for f in files]
    candidates = [given] if given is not None else [FULL_SHAPE, REDUCED_SHAPE]
    for shape in candidates:
        if all(_fits(size, shape) for _, size in sizes):
            if shape == REDUCED_SHAPE and given is None:
                importing.assume(
                    f"the .bin records of {files[0].parent if len(files) > 1 else files[0]} hold "
                    "the seed's CAE-reduced 31×37×31 volumes (their size fits only those); "
                    "--data-option volume_shape=DxHxW says otherwise")
            return shape  # type: ignore[return-value]
    shape = max(candidates, key=lambda c: sum(_fits(size, c) for _, size in sizes))  # most fit
    f, size = next((f, s) for f, s in sizes if not _fits(s, shape))
    dims = "×".join(map(str, shape))
    raise DataError(f"--data {f}: {size} bytes is not a whole number of {record_bytes(shape)}-"
                    f"byte records (float32 [label, {BIN_PHENOTYPES} phenotypes, {dims} voxels], "
                    "as the CS 273B converter writes them); a truncated file, or --data-option "
                    "volume_shape=DxHxW for other volumes")


def _split_list(path: Path) -> list[str] | None:
    """The entries of a seed split list (a JSON list of ``.bin`` paths), or None."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (isinstance(entries, list) and entries and all(isinstance(e, str) for e in entries)
            and all(e.endswith(".bin") for e in entries)):
        return entries
    return None


def _find_lists(folder: Path, options: Mapping[str, str]) -> dict[str, Path]:
    """{'train': list, 'test': list} of the folder (or ``split_lists``), or {} when it has none."""
    if "split_lists" in options:
        names = [n.strip() for n in options["split_lists"].split(",")]
        if len(names) != 2:
            raise DataError(f"--data-option split_lists={options['split_lists']}: expected "
                            "TRAIN.json,TEST.json")
        chosen = {}
        for part, name in zip(("train", "test"), names, strict=True):
            path = Path(name) if Path(name).is_absolute() else folder / name
            if not path.is_file() or _split_list(path) is None:
                raise DataError(f"--data-option split_lists: {path} is not a JSON list of "
                                ".bin files")
            chosen[part] = path
        return chosen
    found: dict[str, list[Path]] = {"train": [], "test": []}
    for path in sorted(folder.rglob("*.json")):
        part = next((p for p in found if p in path.name.lower()), None)
        if part is not None and _split_list(path) is not None:
            found[part].append(path)
    if not found["train"] and not found["test"]:
        return {}
    for part, other in (("train", "test"), ("test", "train")):
        if not found[part]:
            raise DataError(f"--data {folder}: a {other} list ({found[other][0].name}) but no "
                            f"{part} list; add it, or remove the {other} list for a seeded split")
    if len(found["train"]) > 1 or len(found["test"]) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in found["train"] + found["test"])
        raise DataError(f"--data {folder}: several split lists ({names}); choose with "
                        "--data-option split_lists=TRAIN.json,TEST.json")
    return {part: paths[0] for part, paths in found.items()}


def _match(entry: str, by_name: Mapping[str, list[Path]], listing: Path) -> Path:
    """The file under the folder that a list entry (a path on the machine that wrote the list)
    names: by file name, ties broken by the longest common trailing path."""
    parts = Path(entry.replace("\\", "/")).parts
    candidates = by_name.get(parts[-1], [])
    if not candidates:
        raise DataError(f"--data {listing}: lists {entry}, but no {parts[-1]} is under "
                        f"{listing.parent}")

    def common(p: Path) -> int:
        k = 0
        while k < min(len(p.parts), len(parts)) and p.parts[-1 - k] == parts[-1 - k]:
            k += 1
        return k

    best = max(common(p) for p in candidates)
    chosen = [p for p in candidates if common(p) == best]
    if len(chosen) > 1:
        raise DataError(f"--data {listing}: {entry} could be any of {', '.join(map(str, chosen))}")
    return chosen[0]


def bin_sources(path: str, options: Mapping[str, str]
                ) -> tuple[list[Path], dict[Path, int], list[Path]]:
    """The ``.bin`` files of ``--data path``, each one's split code (empty without split
    lists) and the split lists used."""
    files = importing.source_files(path, ["*.bin"], "CS 273B .bin records (<subject>.bin)")
    folder = Path(path)
    lists = _find_lists(folder, options) if folder.is_dir() else {}
    if not lists:
        return files, {}, []
    by_name: dict[str, list[Path]] = {}
    for f in files:
        by_name.setdefault(f.name, []).append(f)
    codes: dict[Path, int] = {}
    for part in ("train", "test"):
        for entry in _split_list(lists[part]) or []:
            f = _match(entry, by_name, lists[part])
            if f in codes and codes[f] != SPLIT_CODES[part]:
                raise DataError(f"--data {folder}: {f.name} is in both {lists['train'].name} "
                                f"and {lists['test'].name}")
            codes[f] = SPLIT_CODES[part]
    unused = len(files) - len(codes)
    if unused:
        importing.assume(f"the {unused} .bin files under {folder} in neither "
                         f"{lists['train'].name} nor {lists['test'].name} are left out")
    return sorted(codes), codes, [lists["train"], lists["test"]]


def import_bin(path: str, options: Mapping[str, str]) -> str:
    """The cached HDF5 file converted from the CS 273B ``.bin`` files of ``--data path``."""
    files, codes, lists = bin_sources(path, options)
    shape = bin_volume_shape(files, options)
    record = record_bytes(shape)
    counts = [f.stat().st_size // record for f in files]
    n = sum(counts)
    if n < 3:
        raise DataError(f"--data {path}: {n} subjects; need at least 3 for train/val/test")

    def write(out: Any, sources: Sequence[Path]) -> None:
        import h5py

        volumes = out.create_dataset("volumes", shape=(n, *shape), dtype=np.float32)
        phenotypes = out.create_dataset("phenotypes", shape=(n, BIN_PHENOTYPES), dtype=np.float32)
        labels = np.empty(n, dtype=np.int64)
        split = np.empty(n, dtype=np.int8)
        names = []
        row = 0
        for f, count in importing.progress(zip(files, counts, strict=True), len(files),
                                           "converting CS 273B .bin files"):
            records = np.memmap(f, dtype="<f4", mode="r", shape=(count, BIN_HEADER + math.prod(shape)))
            for start in range(0, count, 64):
                block = np.asarray(records[start:start + 64])
                bad = np.flatnonzero((block[:, 0] != 0) & (block[:, 0] != 1))
                if bad.size:
                    raise DataError(f"--data {f}: record {start + bad[0]} has label "
                                    f"{float(block[bad[0], 0])}; CS 273B labels are 1.0 or 0.0")
                m = block.shape[0]
                labels[row:row + m] = block[:, 0].astype(np.int64)
                phenotypes[row:row + m] = block[:, 1:BIN_HEADER]
                volumes[row:row + m] = block[:, BIN_HEADER:].reshape(m, *shape)
                split[row:row + m] = codes.get(f, 0)
                row += m
            names += [f.name if count == 1 else f"{f.name}#{i}" for i in range(count)]
            del records
        out.create_dataset("labels", data=labels)
        if codes:
            out.create_dataset("split", data=split)
        out.create_dataset("subjects", data=np.array(names, dtype=object),
                           dtype=h5py.string_dtype())
        out.attrs["bin_layout"] = (f"float32 little-endian [label, {BIN_PHENOTYPES} phenotypes, "
                                   f"{'x'.join(map(str, shape))} voxels C order]")

    settings = {"volume_shape": "x".join(map(str, shape)),
                "split_lists": ",".join(str(p) for p in lists)}
    return importing.import_once(path, [*files, *lists], BIN_IMPORTER, BIN_IMPORT_VERSION,
                                 write, validate, settings)


def _is_bin_source(path: str) -> bool:
    return Path(path).is_dir() or Path(path).suffix.lower() == ".bin"


# -- input resolution -------------------------------------------------------------------------

def resolution_factor(shape: Sequence[int], options: Mapping[str, str]) -> int:
    """The block-mean factor for volumes of ``shape``: 3 for the seed's 91×109×91 unless
    ``resolution`` says otherwise."""
    text = str(options.get("resolution", "auto")).strip().lower()
    if text == "auto":
        return SEED_FACTOR if tuple(shape) == FULL_SHAPE else 1
    if text == "full":
        return 1
    try:
        factor = int(text)
    except ValueError:
        factor = 0
    if factor < 1:
        raise DataError(f"--data-option resolution={text}: expected auto, full or a "
                        "positive integer factor")
    return factor


def reduced_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    return tuple(-(-n // factor) for n in shape)


def block_mean(rows: np.ndarray, factor: int) -> np.ndarray:
    """(B, D, H, W) → (B, ⌈D/f⌉, ⌈H/f⌉, ⌈W/f⌉): the mean of the in-volume voxels of each f³
    window, placed as TensorFlow's ``'SAME'`` stride-f windows (module doc)."""
    rows = np.asarray(rows, dtype=np.float32)
    if factor == 1:
        return rows
    out, weight = rows, np.ones((), np.float32)
    for axis, n in enumerate(rows.shape[1:], start=1):
        size = reduced_shape([n], factor)[0]
        before = (size * factor - n) // 2
        starts = np.maximum(np.arange(size) * factor - before, 0)
        out = np.add.reduceat(out, starts, axis=axis, dtype=np.float32)
        counts = np.diff(np.append(starts, n)).astype(np.float32)
        weight = weight[..., None] * counts if weight.ndim else counts
    return (out / weight).astype(np.float32)


def init_stem(branch: str, experiment: str) -> str:
    """Where ``prepare`` leaves a branch's fetched config (.json) and weights (.pt)."""
    return str(cache_dir() / f"init-{branch}-{cache_key(e=experiment)}")


def prepare(path: str | None, samples: int, seed: int, options: Mapping[str, str],
            upstream: Mapping[str, UpstreamModel] | None = None) -> str:
    """Validate a user's file, import the seed's ``.bin`` files, or generate the synthetic
    default; keep the branch checkpoints the search resolved (``upstream``: ``cnn`` and/or
    ``pheno``, for ``mmnn``)."""
    import torch

    reject_unknown_options(options, OPTIONS)
    size = int_option(options, "size", 32)
    data_seed = int_option(options, "data_seed", 0)
    if not 8 <= size <= 128:
        raise DataError("--data-option size must be between 8 and 128")
    resolution_factor(FULL_SHAPE, options)  # a bad value is refused before any work
    _shape_option(options)
    upstream = upstream or {}
    for option, (branch, _) in INIT_OPTIONS.items():  # checked before any file is made
        if option in options and branch not in upstream:
            raise DataError(f"--data-option {option} starts a branch of the 'mmnn' space; "
                            "search --space mmnn or drop it")
    source = path
    if path is None:
        if samples < 30:
            raise DataError("--samples must be at least 30 for multimodal")
        key = cache_key(v=GENERATOR_VERSION, n=samples, size=size, seed=data_seed)
        target = cache_dir() / f"multimodal{size}-{samples}-{key}.h5"
        if not target.exists():  # float32 volume and phenotypes, int64 label
            from datasets.multimodal_physics import PHENOTYPE_NAMES

            check_room(target, samples, size**3 * 4 + len(PHENOTYPE_NAMES) * 4 + 8,
                       memory_factor=2.5, fewest=30)  # 1.95 measured
            generate(samples, size, data_seed, target)
        path = str(target)
    else:
        if not os.path.exists(path):
            raise no_such_data(path)
        if _is_bin_source(path):
            path = import_bin(path, options)  # checked by ``validate`` as it was imported
            with open_h5(path) as f:
                n = int(f["labels"].shape[0])
        else:  # 0 / 1 floats are read as they are; a column or one-hot rows via the cache
            path = importing.integer_labels(path, validate, floats_as_they_are=True)
            n = validate(path)
        path = os.path.abspath(path)
        stored_splits(path, n, data_seed, source=source)  # announces a seeded validation part
    with open_h5(path) as f:
        shape = tuple(f["volumes"].shape[1:])
    factor = resolution_factor(shape, options)
    reduced = reduced_shape(shape, factor)
    if min(reduced) < 8:
        raise DataError(f"--data-option resolution={options.get('resolution')}: "
                        f"{'×'.join(map(str, shape))} volumes would become "
                        f"{'×'.join(map(str, reduced))}; need at least 8³")
    if factor > 1 and "resolution" not in options:
        importing.assume(
            f"the {'×'.join(map(str, shape))} volumes of {source} reduced to "
            f"{'×'.join(map(str, reduced))} (mean of {factor}³ blocks, stride {factor}), the "
            "resolution the seed ran its models at; --data-option resolution=full keeps them whole")
    for option, (branch, _) in INIT_OPTIONS.items():
        if option in options:
            config, state = upstream[branch].weights(None)  # read from an earlier search
            stem = init_stem(branch, options[option])
            torch.save(state, f"{stem}.pt")
            Path(f"{stem}.json").write_text(json.dumps(config))
    return path


class Standardise:
    """rows → (rows − mean) / std (volumes get a channel axis)."""

    def __init__(self, mean: np.ndarray | float, std: np.ndarray | float, channel_axis: bool):
        self.mean, self.std, self.channel_axis = mean, std, channel_axis

    def __call__(self, rows: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
        out = ((rows.astype(np.float32) - self.mean) / self.std).astype(np.float32)
        return np.ascontiguousarray(out[:, None] if self.channel_axis else out)


class VolumeInput(Standardise):
    """Stored volumes (B, D, H, W) → block mean by ``factor`` → standardised (B, 1, D', H', W')."""

    def __init__(self, factor: int, mean: float, std: float):
        super().__init__(mean, std, channel_axis=True)
        self.factor = factor

    def __call__(self, rows: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
        return super().__call__(block_mean(rows, self.factor), config)


def load(path: str, seed: int, options: Mapping[str, str]) -> DataSplits:
    """Memory-map the volumes; reduce and standardise per batch; describe branch
    initialisations."""
    volumes = memmap_dataset(path, "volumes")
    phenotypes = np.asarray(memmap_dataset(path, "phenotypes"), dtype=np.float32)
    labels = np.asarray(memmap_dataset(path, "labels"), dtype=np.int64)
    train, val, test = stored_splits(path, len(labels), int_option(options, "data_seed", 0))
    factor = resolution_factor(volumes.shape[1:], options)
    sample = block_mean(np.asarray(volumes[np.sort(train[:STATS_SUBJECTS])]), factor)
    sample = sample.astype(np.float64)
    v_mean, v_std = float(sample.mean()), float(sample.std()) or 1.0
    p_mean = phenotypes[train].mean(0)
    p_std = np.where(phenotypes[train].std(0) > 0, phenotypes[train].std(0), 1.0)
    init = {}
    for option, (branch, _) in INIT_OPTIONS.items():
        if option in options:
            stem = init_stem(branch, options[option])
            init[branch] = {"config": json.loads(Path(f"{stem}.json").read_text()),
                            "state_path": f"{stem}.pt"}
    info = DataInfo(input_shape=(1, *reduced_shape(volumes.shape[1:], factor)), num_classes=2,
                    class_names=("control", "diagnosed"),
                    extra={"phenotypes": int(phenotypes.shape[1]), "init": init})
    return DataSplits({"x": volumes, "phen": phenotypes, "y": labels}, train, val, test, info,
                      source=path, transforms={
                          "x": VolumeInput(factor, v_mean, v_std),
                          "phen": Standardise(p_mean, p_std, channel_axis=False)})


register(DatasetSpec(
    name="multimodal", prepare=prepare, load=load,
    description="3D volumes + phenotypes, binary diagnosis (synthetic 32³ default; the CS 273B "
                ".bin files read directly)",
    options=OPTIONS, default_samples=DEFAULT_SAMPLES,
))
