"""Water-Cherenkov events in WatChMaL's HDF5 "image" layout (seed 000): schema, reader, default.

================  =================  =====================================================
dataset           shape              meaning
================  =================  =====================================================
``event_data``    (N, 40, 40, 38)    40×40 mPMT modules; channels 0-18 = charge of a
                                     module's 19 PMTs, 19-37 = their hit times. Barrel-only
                                     (N, 16, 40, 38) files work too. Float32 or float64.
``labels``        (N,)               integer: gamma 0, electron 1, muon 2 (pi0 3)
``energies``      (N, 1)             optional: true energy, MeV
``positions``     (N, 1, 3)          optional: vertex
``angles``        (N, 2)             optional: polar angle, azimuth of the direction
``event_ids``     (N,)               optional: provenance in the simulation's ROOT files
``root_files``    (N,)               optional: likewise
================  =================  =====================================================

``event_data`` must be contiguous and uncompressed (h5py's default; ``h5repack -l CONTI``
converts a chunked file), because every trial memory-maps it, as WatChMaL's own loaders did
for millions of events. Splits: ``--data-option splits=FILE.npz`` with ``train_idxs``,
``val_idxs``, ``test_idxs`` (WatChMaL's split files), else a seeded 70/15/15 split.

Model input is made per batch (the file is never rewritten): charge channels, or charge and
time (``input_channels``), moved to channels-first (C, H, W), normalised by
``--data-option charge_norm=log|scale|none`` (default ``log``: log(1 + q)) and
``time_norm=standard|none`` (default ``standard``: hit times standardised over hit PMTs,
unhit PMTs 0), with statistics from the training split.

Flip augmentation permutes the 19 PMTs of every module with the flip (a mirrored module has
its PMTs mirrored too), by the file's PMT order: files written by this project's simulator
use its geometry (``watchmal_physics.flip_channel_maps``), other files WatChMaL's published
maps (``horizontal_flip_mpmt_map`` / ``vertical_flip_mpmt_map``, the 12 outer / 6 inner /
centre order of its 2019-20 files). A file may carry its own as attributes
``flip_map_horizontal`` and ``flip_map_vertical``: (19,) or (H, 19) gather indices, where
row ``r`` of the flipped image takes its PMT ``k`` from PMT ``map[r, k]`` of its source module.
"""

from __future__ import annotations

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
    int_option,
    memmap_dataset,
    open_h5,
    reject_unknown_options,
    require_dataset,
    split_indices,
)

GENERATOR_VERSION = 1
DEFAULT_SAMPLES = 6000
CHARGE_CHANNELS = 19
ALL_CHANNELS = 38
CLASS_NAMES = ("gamma", "electron", "muon", "pi0")
ROC_PAIRS = (("e_vs_mu", 1, 2), ("e_vs_gamma", 1, 0))
FULL_SCAN_BYTES = 2 * 1024**3  # NaN scan of every row below this size, of a sample above
STATS_EVENTS = 64
#: WatChMaL's PMT permutations for flips (WatChMaL/WatChMaL, ``cnn_mpmt_dataset.py``), in the
#: PMT order of its files: outer ring 0-11, inner ring 12-17, centre 18.
WATCHMAL_FLIP_MAPS = {
    "horizontal": (0, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 12, 17, 16, 15, 14, 13, 18),
    "vertical": (6, 5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 15, 14, 13, 12, 17, 16, 18),
}
GENERATE_BLOCK = 512
OPTIONS = {
    "splits": "WatChMaL split file (.npz with train_idxs, val_idxs, test_idxs)",
    "charge_norm": "log (log(1+q), default), scale (q / 99th percentile) or none",
    "time_norm": "standard (hit times standardised, default) or none",
    "data_seed": "seed of the synthetic set and of the default split (default 0)",
}


def _option(options: Mapping[str, str], key: str, allowed: tuple[str, ...]) -> str:
    value = options.get(key, allowed[0])
    if value not in allowed:
        raise DataError(f"--data-option {key}={value}: use one of {', '.join(allowed)}")
    return value


def _data_seed(options: Mapping[str, str]) -> int:
    return int_option(options, "data_seed", 0)


def generate(samples: int, seed: int, path: os.PathLike[str] | str) -> None:
    """Write a class-balanced synthetic set (γ, e, μ) in the WatChMaL layout, atomically.

    Events are simulated and written in blocks (a block of 512 events is ~125 MB), so memory
    stays flat whatever ``samples`` is; the file is contiguous (memory-mappable)."""
    from tqdm import tqdm

    from datasets.watchmal_physics import simulate_events

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(samples) % 3).astype(np.int64)
    with atomic_h5(path) as f, \
            tqdm(total=samples, desc="simulating water-Cherenkov events", unit="event") as bar:
        out = {"event_data": f.create_dataset("event_data", (samples, 40, 40, ALL_CHANNELS),
                                              dtype=np.float32),
               "energies": f.create_dataset("energies", (samples, 1), dtype=np.float32),
               "positions": f.create_dataset("positions", (samples, 1, 3), dtype=np.float32),
               "angles": f.create_dataset("angles", (samples, 2), dtype=np.float32)}
        for block, start in enumerate(range(0, samples, GENERATE_BLOCK)):
            stop = min(start + GENERATE_BLOCK, samples)
            block_seed = int(np.random.SeedSequence([seed, block]).generate_state(1)[0])
            events = simulate_events(labels[start:stop], block_seed, progress=bar.update)
            for key, dataset in out.items():
                dataset[start:stop] = events[key]
        f.create_dataset("labels", data=labels)
        f.create_dataset("event_ids", data=np.arange(samples, dtype=np.int64))
        f.create_dataset("root_files", data=np.array([b"synthetic.root"] * samples, dtype="S32"))
        f.attrs["generator"] = f"scitune watchmal v{GENERATOR_VERSION}"


def validate(path: str) -> int:
    """Check a file against the layout; return the number of events. Raises DataError."""
    with open_h5(path) as f:
        events = require_dataset(f, "event_data", path, ndim=4)
        labels = require_dataset(f, "labels", path, ndim=1, integer=True)
        n, height, width, channels = events.shape
        if channels != ALL_CHANNELS:
            raise DataError(f"--data {path}: 'event_data' has {channels} channels in its last "
                            f"axis, expected {ALL_CHANNELS} (19 charge + 19 time)")
        if events.dtype.kind != "f":
            raise DataError(f"--data {path}: 'event_data' has dtype {events.dtype}; store floats")
        if height < 16 or width < 16:
            raise DataError(f"--data {path}: 'event_data' images are {height}×{width}; the "
                            "encoder needs at least 16×16 (40×40 or barrel-only 16×40)")
        if n < 3:
            raise DataError(f"--data {path}: {n} events; need at least 3 for train/val/test")
        if events.chunks is not None or events.compression is not None:
            raise DataError(f"--data {path}: 'event_data' is chunked or compressed and cannot be "
                            "memory-mapped; rewrite it contiguous: h5repack -l CONTI in.h5 out.h5")
        if labels.shape[0] != n:
            raise DataError(f"--data {path}: 'event_data' has {n} events but 'labels' has "
                            f"{labels.shape[0]}; they must match")
        y = labels[()]
        if y.min() < 0 or y.max() >= len(CLASS_NAMES):
            raise DataError(f"--data {path}: labels range {y.min()}..{y.max()}; expected "
                            "0 (gamma), 1 (electron), 2 (muon) or 3 (pi0)")
        for key in ("energies", "positions", "angles", "event_ids", "root_files"):
            if key in f and f[key].shape[:1] != (n,):
                raise DataError(f"--data {path}: '{key}' has shape {f[key].shape}; its first "
                                f"axis must be the {n} events")
        flip_maps(f, path, height)
        if events.size * events.dtype.itemsize <= FULL_SCAN_BYTES:
            check_finite(events, path, "event_data", chunk_rows=256)
        else:  # terabyte files: a spread sample here; the loop's guard catches the rest
            rows = np.unique(np.linspace(0, n - 1, 2048).astype(np.int64))
            if not np.isfinite(events[rows]).all():
                raise DataError(f"--data {path}: 'event_data' holds NaN or inf; clean or drop "
                                "those events")
        return n


def flip_maps(f: Any, path: str, height: int) -> dict[str, np.ndarray]:
    """Per-row PMT gather maps ``{"horizontal", "vertical"}: (height, 19)`` for the flips of
    an open file's images (see the module doc). Raises DataError on a malformed attribute."""
    generator = f.attrs.get("generator", b"")
    generator = generator.decode() if isinstance(generator, bytes) else str(generator)
    if generator.startswith("scitune watchmal") and height == 40:
        from datasets.watchmal_physics import flip_channel_maps

        maps = flip_channel_maps()
    else:
        maps = {k: np.asarray(v) for k, v in WATCHMAL_FLIP_MAPS.items()}
    out = {}
    for name, default in maps.items():
        given = np.asarray(f.attrs.get(f"flip_map_{name}", default))
        rows = np.broadcast_to(given, (height, CHARGE_CHANNELS)) if given.shape in (
            (CHARGE_CHANNELS,), (height, CHARGE_CHANNELS)) else None
        if rows is None or given.dtype.kind not in "iu" or not (
                np.sort(rows, axis=1) == np.arange(CHARGE_CHANNELS)).all():
            raise DataError(f"--data {path}: attribute 'flip_map_{name}' must be a permutation "
                            f"of 0..18, shape (19,) or ({height}, 19); it is {given.shape} "
                            f"{given.dtype}: fix it or delete the attribute")
        out[name] = np.ascontiguousarray(rows, dtype=np.int64)
    return out


def read_splits(path: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WatChMaL's ``.npz`` split file, checked against ``n`` events."""
    if not os.path.isfile(path):
        raise DataError(f"--data-option splits={path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as blob:
            missing = [k for k in ("train_idxs", "val_idxs", "test_idxs") if k not in blob]
            if missing:
                raise DataError(f"--data-option splits={path}: missing {', '.join(missing)} "
                                f"(present: {', '.join(blob.files) or 'none'})")
            parts = [np.asarray(blob[k]).ravel() for k in ("train_idxs", "val_idxs", "test_idxs")]
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"--data-option splits={path}: not a readable .npz file ({exc})") from None
    for name, part in zip(("train_idxs", "val_idxs", "test_idxs"), parts, strict=True):
        if part.size and part.dtype.kind not in "iu":
            raise DataError(f"--data-option splits={path}: {name} must hold integers")
        if part.size and (part.min() < 0 or part.max() >= n):
            raise DataError(f"--data-option splits={path}: {name} holds indices outside "
                            f"0..{n - 1} (the file has {n} events)")
    if parts[0].size == 0 or parts[1].size == 0:
        raise DataError(f"--data-option splits={path}: train_idxs and val_idxs must not be empty")
    combined = np.concatenate(parts)
    if np.unique(combined).size != combined.size:
        raise DataError(f"--data-option splits={path}: the splits overlap or repeat events")
    return tuple(np.sort(p.astype(np.int64)) for p in parts)  # type: ignore[return-value]


def prepare(path: str | None, samples: int, seed: int, options: Mapping[str, str]) -> str:
    """Validate a user's file (and split file) or generate the synthetic default."""
    reject_unknown_options(options, OPTIONS)
    _option(options, "charge_norm", ("log", "scale", "none"))
    _option(options, "time_norm", ("standard", "none"))
    if path is None:
        if samples < 30:
            raise DataError("--samples must be at least 30 for watchmal")
        data_seed = _data_seed(options)
        key = cache_key(v=GENERATOR_VERSION, n=samples, seed=data_seed)
        target = cache_dir() / f"watchmal-{samples}-{key}.h5"
        if not target.exists():
            generate(samples, data_seed, target)
        path = str(target)
        n = samples
    else:
        if not os.path.exists(path):
            raise DataError(f"--data {path}: no such file; check the path")
        n = validate(path)
    if "splits" in options:
        read_splits(options["splits"], n)
    return os.path.abspath(path)


class EventTransform:
    """Stored rows (B, H, W, 38) → model input (B, C, H, W) float32 (see the module doc)."""

    def __init__(self, charge_norm: str, time_norm: str, charge_scale: float,
                 time_mean: float, time_std: float):
        self.charge_norm, self.time_norm = charge_norm, time_norm
        self.charge_scale, self.time_mean, self.time_std = charge_scale, time_mean, time_std

    def __call__(self, rows: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
        with_time = config.get("input_channels", "charge") == "charge_time"
        charge = np.clip(rows[..., :CHARGE_CHANNELS].astype(np.float32), 0.0, None)
        if self.charge_norm == "log":
            charge_in = np.log1p(charge)
        elif self.charge_norm == "scale":
            charge_in = charge / self.charge_scale
        else:
            charge_in = charge
        parts = [charge_in]
        if with_time:
            time = rows[..., CHARGE_CHANNELS:ALL_CHANNELS].astype(np.float32)
            if self.time_norm == "standard":
                time = np.where(charge > 0, (time - self.time_mean) / self.time_std, 0.0)
            parts.append(time.astype(np.float32))
        stacked = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        return np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))


def load(path: str, seed: int, options: Mapping[str, str]) -> DataSplits:
    """Memory-map the events; splits from the split file or seeded; per-batch transform."""
    events = memmap_dataset(path, "event_data")
    labels = np.asarray(memmap_dataset(path, "labels"), dtype=np.int64)
    if "splits" in options:
        train, val, test = read_splits(options["splits"], len(labels))
    else:
        train, val, test = split_indices(len(labels), _data_seed(options))
    with open_h5(path) as f:
        maps = flip_maps(f, path, events.shape[1])
    sample = np.asarray(events[np.sort(train[:STATS_EVENTS])], dtype=np.float64)
    charge, time = sample[..., :CHARGE_CHANNELS], sample[..., CHARGE_CHANNELS:ALL_CHANNELS]
    hit = charge > 0
    charge_scale = float(np.percentile(charge[hit], 99)) if hit.any() else 1.0
    time_mean = float(time[hit].mean()) if hit.any() else 0.0
    time_std = float(time[hit].std()) if hit.sum() > 1 else 1.0
    transform = EventTransform(options.get("charge_norm", "log"), options.get("time_norm", "standard"),
                               max(charge_scale, 1e-6), time_mean, max(time_std, 1e-6))
    num_classes = max(3, int(labels.max()) + 1)
    info = DataInfo(input_shape=(ALL_CHANNELS, events.shape[1], events.shape[2]),
                    num_classes=num_classes, class_names=CLASS_NAMES[:num_classes],
                    extra={"roc_pairs": ROC_PAIRS, "flip_channel_maps": maps})
    return DataSplits({"x": events, "y": labels}, train, val, test, info, source=path,
                      transforms={"x": transform})


register(
    DatasetSpec(
        name="watchmal",
        prepare=prepare,
        load=load,
        description="water-Cherenkov events, WatChMaL image layout (synthetic γ/e/μ default)",
        options=OPTIONS,
        default_samples=DEFAULT_SAMPLES,
    )
)
