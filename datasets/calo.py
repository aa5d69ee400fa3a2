"""Calorimeter η×φ images for missing transverse energy (seed 002): schema, reader, default.

================  ======================  ============================================
dataset           shape                   meaning
================  ======================  ============================================
``images``        (N, n_eta, n_phi, C)    channels-last E_T per bin (GeV): e.g. clusters,
                                          pile-up-suppressed clusters, tracks
``met``           (N, 2)                  true missing transverse momentum (GeV)
``truth``         (N, n_eta, n_phi)       optional: hard-scatter E_T image (GeV)
================  ======================  ============================================

File attributes: ``channels`` (JSON list of channel names), ``eta_max`` (default 2.5); φ spans
[−π, π) over the ``n_phi`` bins (periodic). Model input, per batch: (B, C, n_eta, n_phi) in
units of 10 GeV. MET of an image: each bin contributes E_T·(−cos φ, −sin φ) at its centre.
The synthetic default (``datasets/calo_physics.py``, 64×64, ⟨μ⟩ = 40) has hard-scatter jets
and neutrinos with a flat true-MET spectrum up to ~100 GeV, pile-up, a SoftKiller-suppressed
channel and a track channel without pile-up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

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
    memmap_dataset,
    open_h5,
    read_h5,
    reject_unknown_options,
    require_dataset,
    split_indices,
)

GENERATOR_VERSION = 1
DEFAULT_SAMPLES = 4000
INPUT_SCALE = 10.0  # GeV per unit of model input
OPTIONS = {
    "bins": "η and φ bins of the synthetic images (default 64)",
    "mu": "mean pile-up of the synthetic set (default 40)",
    "data_seed": "seed of the synthetic set and of the train/val/test split (default 0)",
}


def _number(options: Mapping[str, str], key: str, default: float, kind: type = int) -> Any:
    try:
        return kind(options.get(key, default))
    except ValueError:
        raise DataError(f"--data-option {key} must be a number") from None


def generate(samples: int, bins: int, mu: float, seed: int, path: os.PathLike[str] | str) -> None:
    from tqdm import tqdm

    from datasets.calo_physics import CHANNELS, simulate_events

    with tqdm(total=samples, desc="simulating calorimeter events", unit="event") as bar:
        events = simulate_events(samples, seed, eta_bins=bins, phi_bins=bins, mu=mu,
                                 progress=bar.update)
    with atomic_h5(path) as f:
        f.create_dataset("images", data=events["images"].astype(np.float32))
        f.create_dataset("met", data=events["met"].astype(np.float32))
        f.create_dataset("truth", data=events["truth"].astype(np.float32))
        f.attrs["channels"] = json.dumps(list(CHANNELS))
        f.attrs["eta_max"] = 2.5
        f.attrs["generator"] = f"scitune calo v{GENERATOR_VERSION} mu={mu}"


def validate(path: str) -> int:
    """Check a user's file; return the number of events. Raises DataError."""
    with open_h5(path) as f:
        images = require_dataset(f, "images", path, ndim=4)
        met = require_dataset(f, "met", path, ndim=2)
        n = images.shape[0]
        if n < 3:
            raise DataError(f"--data {path}: {n} events; need at least 3 for train/val/test")
        if met.shape != (n, 2):
            raise DataError(f"--data {path}: 'met' has shape {met.shape}, expected ({n}, 2)")
        if min(images.shape[1:3]) < 8:
            raise DataError(f"--data {path}: images are {images.shape[1:3]} bins; need ≥ 8×8")
        if "truth" in f and f["truth"].shape != images.shape[:3]:
            raise DataError(f"--data {path}: 'truth' has shape {f['truth'].shape}, expected "
                            f"{images.shape[:3]}")
        check_finite(images, path, "images", chunk_rows=512)
        check_finite(met, path, "met")
        return n


def prepare(path: str | None, samples: int, seed: int, options: Mapping[str, str]) -> str:
    reject_unknown_options(options, OPTIONS)
    bins = _number(options, "bins", 64)
    mu = _number(options, "mu", 40.0, float)
    data_seed = _number(options, "data_seed", 0)
    if not 8 <= bins <= 256 or mu < 0:
        raise DataError("--data-option bins must be 8-256 and mu >= 0")
    if path is None:
        if samples < 30:
            raise DataError("--samples must be at least 30 for calo")
        key = cache_key(v=GENERATOR_VERSION, n=samples, bins=bins, mu=mu, seed=data_seed)
        target = cache_dir() / f"calo{bins}-{samples}-{key}.h5"
        if not target.exists():
            generate(samples, bins, mu, data_seed, target)
        return str(target)
    if not os.path.exists(path):
        raise DataError(f"--data {path}: no such file; check the path")
    validate(path)
    return os.path.abspath(path)


class ToChannelsFirst:
    """(B, n_eta, n_phi, C) GeV → (B, C, n_eta, n_phi) in units of ``INPUT_SCALE``."""

    def __call__(self, rows: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
        return np.ascontiguousarray((rows.astype(np.float32) / INPUT_SCALE).transpose(0, 3, 1, 2))


def load(path: str, seed: int, options: Mapping[str, str]) -> DataSplits:
    images = memmap_dataset(path, "images")
    met = np.asarray(memmap_dataset(path, "met"), dtype=np.float32)
    arrays = {"x": images, "met": met}
    with read_h5(path) as f:
        channels = json.loads(f.attrs.get("channels", "[]")) or \
            [f"channel_{i}" for i in range(images.shape[-1])]
        eta_max = float(f.attrs.get("eta_max", 2.5))
        if "truth" in f:
            arrays["truth"] = memmap_dataset(path, "truth")
    train, val, test = split_indices(len(met), _number(options, "data_seed", 0))
    info = DataInfo(input_shape=(images.shape[3], images.shape[1], images.shape[2]),
                    extra={"channels": tuple(channels), "eta_max": eta_max,
                           "input_scale": INPUT_SCALE})
    return DataSplits(arrays, train, val, test, info, source=path,
                      transforms={"x": ToChannelsFirst()})


register(DatasetSpec(
    name="calo", prepare=prepare, load=load,
    description="calorimeter η×φ images with true MET (synthetic jets + pile-up default)",
    options=OPTIONS, default_samples=DEFAULT_SAMPLES,
))
