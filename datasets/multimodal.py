"""Subjects with a 3D volume and a phenotype vector, and a binary label (seed 004).

================  ==============  ===============================================
dataset           shape           meaning
================  ==============  ===============================================
``volumes``       (N, D, H, W)    scan intensities (float or int)
``phenotypes``    (N, P)          phenotype features, numbers (categories coded)
``labels``        (N,)            0 / 1 diagnosis
================  ==============  ===============================================

Volumes (contiguous) are memory-mapped. Model input per batch: volumes standardised with the
training split's mean and standard deviation, shape (B, 1, D, H, W); phenotypes standardised
per feature. The synthetic default (``datasets/multimodal_physics.py``, ``size=32`` → 32³)
puts label information in localised structure of the volume and in a few phenotype
features, so a model using both beats either alone.

``--data-option cnn_experiment=NAME`` / ``pheno_experiment=NAME``: the multimodal ``mmnn``
starts its branches from the best checkpoints of those earlier ``cnn`` / ``pheno_nn``
searches (read from the same MLflow store by the search layer, :mod:`search.stages`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from datasets import register
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
    int_option,
    memmap_dataset,
    open_h5,
    reject_unknown_options,
    require_dataset,
    split_indices,
)

GENERATOR_VERSION = 1
DEFAULT_SAMPLES = 1200
STATS_SUBJECTS = 128
OPTIONS = {
    "size": "edge of the synthetic volumes in voxels (default 32)",
    "data_seed": "seed of the synthetic set and of the train/val/test split (default 0)",
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


def validate(path: str) -> int:
    """Check a user's file; return the number of subjects. Raises DataError."""
    with open_h5(path) as f:
        volumes = require_dataset(f, "volumes", path, ndim=4)
        phenotypes = require_dataset(f, "phenotypes", path, ndim=2)
        labels = require_dataset(f, "labels", path, ndim=1, integer=True)
        n = volumes.shape[0]
        if n < 3:
            raise DataError(f"--data {path}: {n} subjects; need at least 3 for train/val/test")
        for key, ds in (("phenotypes", phenotypes), ("labels", labels)):
            if ds.shape[0] != n:
                raise DataError(f"--data {path}: 'volumes' has {n} subjects but '{key}' has "
                                f"{ds.shape[0]}; they must match")
        if min(volumes.shape[1:]) < 8:
            raise DataError(f"--data {path}: volumes are {volumes.shape[1:]}; need at least 8³")
        y = labels[()]
        if not set(np.unique(y)) <= {0, 1}:
            raise DataError(f"--data {path}: labels must be 0 or 1 (found {sorted(set(np.unique(y)))[:5]})")
        check_finite(volumes, path, "volumes", chunk_rows=64)
        check_finite(phenotypes, path, "phenotypes")
        return n


def init_stem(branch: str, experiment: str) -> str:
    """Where ``prepare`` leaves a branch's fetched config (.json) and weights (.pt)."""
    return str(cache_dir() / f"init-{branch}-{cache_key(e=experiment)}")


def prepare(path: str | None, samples: int, seed: int, options: Mapping[str, str],
            upstream: Mapping[str, UpstreamModel] | None = None) -> str:
    """Validate a user's file or generate the synthetic default; keep the branch checkpoints
    the search resolved (``upstream``: ``cnn`` and/or ``pheno``, for ``mmnn``)."""
    import torch

    reject_unknown_options(options, OPTIONS)
    size = int_option(options, "size", 32)
    data_seed = int_option(options, "data_seed", 0)
    if not 8 <= size <= 128:
        raise DataError("--data-option size must be between 8 and 128")
    upstream = upstream or {}
    for option, (branch, _) in INIT_OPTIONS.items():  # checked before any file is made
        if option in options and branch not in upstream:
            raise DataError(f"--data-option {option} starts a branch of the 'mmnn' space; "
                            "search --space mmnn or drop it")
    if path is None:
        if samples < 30:
            raise DataError("--samples must be at least 30 for multimodal")
        key = cache_key(v=GENERATOR_VERSION, n=samples, size=size, seed=data_seed)
        target = cache_dir() / f"multimodal{size}-{samples}-{key}.h5"
        if not target.exists():
            generate(samples, size, data_seed, target)
        path = str(target)
    else:
        if not os.path.exists(path):
            raise DataError(f"--data {path}: no such file; check the path")
        validate(path)
        path = os.path.abspath(path)
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


def load(path: str, seed: int, options: Mapping[str, str]) -> DataSplits:
    """Memory-map the volumes; standardise per batch; describe branch initialisations."""
    volumes = memmap_dataset(path, "volumes")
    phenotypes = np.asarray(memmap_dataset(path, "phenotypes"), dtype=np.float32)
    labels = np.asarray(memmap_dataset(path, "labels"), dtype=np.int64)
    train, val, test = split_indices(len(labels), int_option(options, "data_seed", 0))
    sample = np.asarray(volumes[np.sort(train[:STATS_SUBJECTS])], dtype=np.float64)
    v_mean, v_std = float(sample.mean()), float(sample.std()) or 1.0
    p_mean = phenotypes[train].mean(0)
    p_std = np.where(phenotypes[train].std(0) > 0, phenotypes[train].std(0), 1.0)
    init = {}
    for option, (branch, _) in INIT_OPTIONS.items():
        if option in options:
            stem = init_stem(branch, options[option])
            init[branch] = {"config": json.loads(Path(f"{stem}.json").read_text()),
                            "state_path": f"{stem}.pt"}
    info = DataInfo(input_shape=(1, *volumes.shape[1:]), num_classes=2,
                    class_names=("control", "diagnosed"),
                    extra={"phenotypes": int(phenotypes.shape[1]), "init": init})
    return DataSplits({"x": volumes, "phen": phenotypes, "y": labels}, train, val, test, info,
                      source=path, transforms={
                          "x": Standardise(v_mean, v_std, channel_axis=True),
                          "phen": Standardise(p_mean, p_std, channel_axis=False)})


register(DatasetSpec(
    name="multimodal", prepare=prepare, load=load,
    description="3D volumes + phenotypes, binary diagnosis (synthetic 32³ default)",
    options=OPTIONS, default_samples=DEFAULT_SAMPLES,
))
