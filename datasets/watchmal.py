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
``val_idxs``, ``test_idxs`` (WatChMaL's split files), else a seeded 70/15/15 split. A split
file without ``test_idxs`` (common: WatChMaL's training only needs the two) tests on the
events in neither list, or, when there are none, on a seeded half of ``val_idxs``; either
way the choice is printed. Events labelled -1 (WatChMaL's DataTools label π⁰ and unknown
particles so) are left out of every split (``--data-option unlabelled=drop``, the default,
printed with their count) or refused (``unlabelled=error``).

WatChMaL's current hit-array layout (DataTools' ``*_digihits.h5``, read by its ``H5Dataset``)
is imported once into this layout, cached by content (:func:`datasets.importing.import_once`):

====================  ============  ========  ============================================
dataset               shape         dtype     meaning
====================  ============  ========  ============================================
``event_hits_index``  (N,)          int64     first hit of each event in the hit arrays
``hit_pmt``           (n_hits,)     int32     PMT id: mPMT ``id // 19``, PMT ``id % 19``
``hit_charge``        (n_hits,)     float32   digitised charge
``hit_time``          (n_hits,)     float32   digitised time
``labels``            (N,)          int32     gamma 0, electron 1, muon 2, other -1
====================  ============  ========  ============================================

(``energies``, ``positions``, ``angles``, ``event_ids``, ``root_files`` are copied when
present.) The mPMT → pixel map is WatChMaL's ``mpmt_positions_file``: ``--data-option
mpmt_positions=FILE.npz`` (array ``mpmt_image_positions``, (n_mPMT, 2) rows and columns) or a
``.npy`` of that array, else a dataset ``mpmt_image_positions`` inside the hit file. Images
are built as WatChMaL's ``CNNmPMTDataset.process_data`` builds them: charge and time of PMT
``k`` of mPMT ``m`` at ``[row(m), col(m)]``, channel ``k`` (resp. 19 + ``k``), unhit PMTs 0, and
on the barrel rows (those every column fills) the PMTs reordered by WatChMaL's barrel map of
the ``--data-option mpmt_convention`` (``old``, WCSim's 2020 order, default, or ``new``); the
convention's flip maps are stored as the file's ``flip_map_*`` attributes.

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

import hashlib
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
#: WatChMaL's PMT permutations of barrel mPMTs, so that their PMT order matches the end-caps'
#: in the 2-D projection (``cnn_mpmt_dataset.py``: ``BARREL_MPMT_MAP`` / ``_NEW``), and the
#: flip maps of each WCSim mPMT convention; new channel ``k`` takes old channel ``map[k]``.
MPMT_CONVENTIONS = {
    "old": {"barrel": (6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 15, 16, 17, 12, 13, 14, 18),
            **WATCHMAL_FLIP_MAPS},
    "new": {"barrel": (0, 4, 5, 6, 1, 2, 3, 13, 14, 15, 16, 17, 18, 7, 8, 9, 10, 11, 12),
            "horizontal": (0, 4, 3, 2, 1, 6, 5, 13, 12, 11, 10, 9, 8, 7, 18, 17, 16, 15, 14),
            "vertical": (0, 1, 6, 5, 4, 3, 2, 7, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8)},
}
HITS_IMPORTER = "watchmal-hits"
HITS_IMPORT_VERSION = 1
HIT_DATASETS = ("event_hits_index", "hit_pmt", "hit_charge", "hit_time")
COPIED_DATASETS = ("energies", "positions", "angles", "event_ids", "root_files")
IMPORT_BLOCK_BYTES = 2**28  # images converted per block: ~256 MB of float32
GENERATE_BLOCK = 512
OPTIONS = {
    "splits": "WatChMaL split file (.npz with train_idxs, val_idxs and, optionally, test_idxs: "
              "without it, the events in neither list, else a seeded half of val_idxs)",
    "unlabelled": "drop (default: events labelled -1, WatChMaL's pi0 / unknown particle, are "
                  "left out of every split, with their count printed) or error",
    "mpmt_positions": "hit-array files: WatChMaL's mPMT image positions, .npz with "
                      "mpmt_image_positions or .npy of (n_mPMT, 2) rows, columns (default: the "
                      "file's own mpmt_image_positions dataset)",
    "mpmt_convention": "hit-array files: WCSim's PMT order inside mPMTs, old (2020, default) or "
                       "new (WatChMaL's use_new_mpmt_convention)",
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


def validate(path: str, allow_unlabelled: bool = False) -> int:
    """Check a file against the layout; return the number of events. Raises DataError.
    ``allow_unlabelled`` accepts label -1 (left out of the splits by :func:`load`)."""
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
        if y.min() < -1 or y.max() >= len(CLASS_NAMES):
            raise DataError(f"--data {path}: labels range {y.min()}..{y.max()}; expected "
                            "0 (gamma), 1 (electron), 2 (muon), 3 (pi0) or -1 (unlabelled, "
                            "see --data-option unlabelled)")
        if not allow_unlabelled and y.min() == -1:
            raise DataError(_unlabelled_message(path, int((y == -1).sum())))
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


def _unlabelled_message(path: str, count: int) -> str:
    return (f"--data {path}: {count} events are labelled -1 (pi0 or unknown particle, as "
            "WatChMaL's DataTools write them); leave them out with --data-option "
            "unlabelled=drop, or relabel them 0-3")


def _unlabelled(path: str, labels: np.ndarray, options: Mapping[str, str]) -> int:
    """Apply ``--data-option unlabelled`` to a file's labels: the number of events labelled
    -1 (announced when dropped), or DataError for ``unlabelled=error`` or too few left."""
    policy = _option(options, "unlabelled", ("drop", "error"))
    count = int(np.count_nonzero(labels == -1))
    if count == 0:
        return 0
    if policy == "error":
        raise DataError(_unlabelled_message(path, count))
    if labels.size - count < 3:
        raise DataError(f"--data {path}: only {labels.size - count} events are labelled (0-3) "
                        f"and {count} are labelled -1; need at least 3 labelled events")
    importing.assume(f"the {count} events of {path} labelled -1 (pi0 or unknown particle in "
                     "WatChMaL's DataTools) are dropped from every split; --data-option "
                     "unlabelled=error refuses such a file instead")
    return count


def read_splits(path: str, n: int, seed: int = 0, keep: np.ndarray | None = None,
                announce: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WatChMaL's ``.npz`` split file, checked against ``n`` events.

    Without ``test_idxs`` the test set is the events in neither ``train_idxs`` nor
    ``val_idxs``, or, when every event is in one of them, a ``seed``-ed half of ``val_idxs``
    (printed when ``announce``). ``keep`` (a mask over the events) leaves the others out of
    every split (events labelled -1)."""
    if not os.path.isfile(path):
        raise DataError(f"--data-option splits={path}: no such file")
    names = ("train_idxs", "val_idxs", "test_idxs")
    try:
        with np.load(path, allow_pickle=False) as blob:
            missing = [k for k in names[:2] if k not in blob]
            if missing:
                raise DataError(f"--data-option splits={path}: missing {', '.join(missing)} "
                                f"(present: {', '.join(blob.files) or 'none'})")
            parts = [np.asarray(blob[k]).ravel() for k in names if k in blob]
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"--data-option splits={path}: not a readable .npz file ({exc})") from None
    for name, part in zip(names, parts, strict=False):
        if part.size and part.dtype.kind not in "iu":
            raise DataError(f"--data-option splits={path}: {name} must hold integers")
        if part.size and (part.min() < 0 or part.max() >= n):
            raise DataError(f"--data-option splits={path}: {name} holds indices outside "
                            f"0..{n - 1} (the file has {n} events)")
    parts = [p.astype(np.int64) for p in parts]
    if parts[0].size == 0 or parts[1].size == 0:
        raise DataError(f"--data-option splits={path}: train_idxs and val_idxs must not be empty")
    combined = np.concatenate(parts)
    if np.unique(combined).size != combined.size:
        raise DataError(f"--data-option splits={path}: the splits overlap or repeat events")
    kept = np.ones(n, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    parts = [np.sort(p[kept[p]]) for p in parts]
    for name, part in zip(names[:2], parts, strict=False):
        if part.size == 0:
            raise DataError(f"--data-option splits={path}: {name} holds only events labelled "
                            "-1, which are dropped; put labelled events in it")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    train, val = parts
    rest = np.ones(n, dtype=bool)
    rest[train] = rest[val] = False
    test = np.flatnonzero(rest & kept).astype(np.int64)
    if test.size:
        message = (f"{path} has no test_idxs: testing on the {test.size} events in neither "
                   "train_idxs nor val_idxs; add test_idxs to the file to choose them")
    else:
        if val.size < 2:
            raise DataError(f"--data-option splits={path}: no test_idxs, every event is in "
                            f"train_idxs or val_idxs and val_idxs has {val.size} event; add "
                            "test_idxs to the file")
        order = np.random.default_rng(seed).permutation(val)
        test, val = np.sort(order[:val.size // 2]), np.sort(order[val.size // 2:])
        message = (f"{path} has no test_idxs and every event is in train_idxs or val_idxs: "
                   f"testing on a seeded half of val_idxs ({test.size} events, data_seed={seed}), "
                   f"validating on the other {val.size}; add test_idxs to the file to choose them")
    if announce:
        importing.assume(message)
    return train, val, test


def _image_positions(path: str, f: Any, options: Mapping[str, str]) -> tuple[np.ndarray, str]:
    """WatChMaL's mPMT → (row, column) map for a hit-array file, checked, with its origin."""
    given = options.get("mpmt_positions")
    if given is None:
        if "mpmt_image_positions" not in f:
            raise DataError(f"--data {path}: a WatChMaL hit-array file needs its mPMT image "
                            "positions: pass --data-option mpmt_positions=FILE.npz (WatChMaL's "
                            "mpmt_positions_file) or a .npy of (n_mPMT, 2) rows, columns")
        where, raw = f"--data {path}: dataset 'mpmt_image_positions'", f["mpmt_image_positions"][()]
        origin = f"{path}:mpmt_image_positions"
    else:
        where, origin = f"--data-option mpmt_positions={given}", os.path.abspath(given)
        if not os.path.isfile(given):
            raise DataError(f"{where}: no such file; point it at WatChMaL's mpmt_positions_file")
        try:
            loaded = np.load(given, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    if "mpmt_image_positions" not in loaded.files:
                        raise DataError(f"{where}: no array 'mpmt_image_positions' in it "
                                        f"(present: {', '.join(loaded.files) or 'none'}); "
                                        "save the map under that name")
                    raw = loaded["mpmt_image_positions"]
            else:
                raw = loaded
        except (OSError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{where}: not a readable .npz or .npy file ({exc})") from None
    positions = np.asarray(raw)
    if positions.ndim != 2 or positions.shape[1] != 2 or positions.shape[0] == 0 \
            or positions.dtype.kind not in "iuf":
        raise DataError(f"{where}: image positions must be an (n_mPMT, 2) array of rows and "
                        f"columns; it is {positions.shape} {positions.dtype}")
    if positions.dtype.kind == "f" and not (np.isfinite(positions).all()
                                            and (positions == np.round(positions)).all()):
        raise DataError(f"{where}: image positions must be whole pixel indices")
    positions = positions.astype(np.int64)
    if positions.min() < 0:
        raise DataError(f"{where}: image positions hold negative pixel indices")
    height, width = (int(v) + 1 for v in positions.max(axis=0))
    if height < 16 or width < 16:
        raise DataError(f"{where}: the positions span a {height}×{width} image; the encoder needs "
                        "at least 16×16")
    rows, counts = np.unique(positions[:, 0], return_counts=True)
    if not (counts == width).any():
        raise DataError(f"{where}: no image row holds a full barrel ring ({width} mPMTs); these "
                        "are not WatChMaL mPMT image positions")
    return positions, origin


def _barrel_rows(positions: np.ndarray) -> slice:
    """WatChMaL's barrel: from the first to the last row that every column fills."""
    width = int(positions[:, 1].max()) + 1
    rows, counts = np.unique(positions[:, 0], return_counts=True)
    full = rows[counts == width]
    return slice(int(full.min()), int(full.max()) + 1)


def _check_hit_file(path: str, f: Any) -> tuple[int, int]:
    """Structure of a hit-array file: (events, hits). Raises DataError naming the fix."""
    for key in HIT_DATASETS:
        require_dataset(f, key, path, ndim=1, integer=key in ("event_hits_index", "hit_pmt"))
    labels, stored_as, _ = class_labels(f, "labels", path)
    if stored_as is not None:
        importing.assume(f"the labels of {path} (stored as {stored_as}) hold one class per "
                         "event; they are imported as the schema's (N,) integers")
    n, hits = f["event_hits_index"].shape[0], f["hit_pmt"].shape[0]
    for key in ("hit_charge", "hit_time"):
        if f[key].shape[0] != hits:
            raise DataError(f"--data {path}: '{key}' has {f[key].shape[0]} hits but 'hit_pmt' "
                            f"has {hits}; the hit arrays must match")
    if labels.shape[0] != n:
        raise DataError(f"--data {path}: 'event_hits_index' has {n} events but 'labels' has "
                        f"{labels.shape[0]}; they must match")
    if n < 3:
        raise DataError(f"--data {path}: {n} events; need at least 3 for train/val/test")
    starts = f["event_hits_index"][()]
    if starts.min() < 0 or starts.max() > hits or (np.diff(starts) < 0).any():
        raise DataError(f"--data {path}: 'event_hits_index' must rise from 0 to at most the "
                        f"{hits} hits (each event's first hit); re-create the file")
    for key in COPIED_DATASETS:
        if key in f and f[key].shape[:1] != (n,):
            raise DataError(f"--data {path}: '{key}' has shape {f[key].shape}; its first "
                            f"axis must be the {n} events")
    return n, hits


def _hits_to_images(path: str, src: Any, out: Any, positions: np.ndarray,
                    convention: str) -> None:
    """Write ``src``'s hits as WatChMaL's CNNmPMTDataset images into ``out['event_data']``
    (N, H, W, 38), block by block (see the module doc)."""
    n = src["event_hits_index"].shape[0]
    bounds = np.append(src["event_hits_index"][()], src["hit_pmt"].shape[0]).astype(np.int64)
    height, width = (int(v) + 1 for v in positions.max(axis=0))
    barrel = _barrel_rows(positions)
    mapping = np.asarray(MPMT_CONVENTIONS[convention]["barrel"])
    gather = np.concatenate([mapping, mapping + CHARGE_CHANNELS])
    images = out.create_dataset("event_data", (n, height, width, ALL_CHANNELS), dtype=np.float32)
    block = max(1, IMPORT_BLOCK_BYTES // (height * width * ALL_CHANNELS * 4))
    buffer = np.zeros((min(block, n), height, width, ALL_CHANNELS), dtype=np.float32)
    for start in importing.progress(range(n), n, "converting WatChMaL hits to images (events)"):
        if start % block:
            continue
        stop = min(start + block, n)
        lo, hi = bounds[start], bounds[stop]
        pmt = np.asarray(src["hit_pmt"][lo:hi], dtype=np.int64)
        event = np.repeat(np.arange(stop - start), np.diff(bounds[start:stop + 1]))
        module, channel = pmt // CHARGE_CHANNELS, pmt % CHARGE_CHANNELS
        bad = np.flatnonzero((pmt < 0) | (module >= positions.shape[0]))
        if bad.size:
            raise DataError(f"--data {path}: event {start + event[bad[0]]} has a hit on PMT "
                            f"{pmt[bad[0]]}, outside the {positions.shape[0]} mPMTs × 19 PMTs of "
                            "the image positions; pass the mpmt_positions of this detector")
        charge = np.asarray(src["hit_charge"][lo:hi], dtype=np.float32)
        time = np.asarray(src["hit_time"][lo:hi], dtype=np.float32)
        for key, values in (("hit_charge", charge), ("hit_time", time)):
            if not np.isfinite(values).all():
                first = event[np.flatnonzero(~np.isfinite(values))[0]]
                raise DataError(f"--data {path}: '{key}' holds NaN or inf (first in event "
                                f"{start + first}); clean or drop those events")
        rows, cols = positions[module, 0], positions[module, 1]
        view = buffer[:stop - start]
        view.fill(0.0)
        view[event, rows, cols, channel] = charge
        view[event, rows, cols, channel + CHARGE_CHANNELS] = time
        view[:, barrel] = view[:, barrel][..., gather]
        images[start:stop] = view


def _import_hits(path: str, options: Mapping[str, str]) -> str:
    """The cached image-layout file converted from a WatChMaL hit-array file."""
    convention = _option(options, "mpmt_convention", ("old", "new"))
    if "mpmt_convention" not in options:
        importing.assume(f"{path} uses WCSim's old (2020) PMT order inside mPMTs, as WatChMaL's "
                         "CNNmPMTDataset does by default; --data-option mpmt_convention=new for "
                         "files made with its new convention")
    with open_h5(path) as f:
        _check_hit_file(path, f)
        positions, origin = _image_positions(path, f, options)
        _unlabelled(path, class_labels(f, "labels", path)[0], options)
    files = importing.source_files(path, ["*.h5", "*.hdf5"], "WatChMaL hit-array files")

    def write(out: Any, sources: Sequence[Path]) -> None:
        with open_h5(str(sources[0])) as src:
            _hits_to_images(path, src, out, positions, convention)
            out.create_dataset("labels", data=class_labels(src, "labels", path)[0])
            for key in COPIED_DATASETS:
                if key in src:
                    src.copy(src[key], out, key)
        out.attrs["mpmt_positions"] = origin
        out.attrs["mpmt_convention"] = convention
        for name in ("horizontal", "vertical"):
            out.attrs[f"flip_map_{name}"] = np.asarray(MPMT_CONVENTIONS[convention][name],
                                                       dtype=np.int64)

    settings = {"mpmt_convention": convention,
                "mpmt_positions_sha256": hashlib.sha256(positions.tobytes()).hexdigest()}
    return importing.import_once(path, files, HITS_IMPORTER, HITS_IMPORT_VERSION, write,
                                 lambda p: validate(p, allow_unlabelled=True), settings)


def _is_hit_file(path: str) -> bool:
    with open_h5(path) as f:
        return "event_data" not in f and "hit_pmt" in f


def prepare(path: str | None, samples: int, seed: int, options: Mapping[str, str]) -> str:
    """Validate a user's file (and split file), import a WatChMaL hit-array file, or generate
    the synthetic default."""
    reject_unknown_options(options, OPTIONS)
    _option(options, "charge_norm", ("log", "scale", "none"))
    _option(options, "time_norm", ("standard", "none"))
    _option(options, "unlabelled", ("drop", "error"))
    _option(options, "mpmt_convention", ("old", "new"))
    if path is None:
        if samples < 30:
            raise DataError("--samples must be at least 30 for watchmal")
        data_seed = _data_seed(options)
        key = cache_key(v=GENERATOR_VERSION, n=samples, seed=data_seed)
        target = cache_dir() / f"watchmal-{samples}-{key}.h5"
        if not target.exists():  # written block by block: memory grew 0.03× the file's size
            check_room(target, samples, 40 * 40 * ALL_CHANNELS * 4 + (1 + 3 + 2) * 4 + 2 * 8 + 32,
                       memory_factor=0.05, fewest=30)
            generate(samples, data_seed, target)
        path = str(target)
        n = samples
    else:
        if not os.path.exists(path):
            raise no_such_data(path)
        source = path
        if _is_hit_file(path):
            path = _import_hits(path, options)
        else:
            path = importing.integer_labels(path, lambda p: validate(p, allow_unlabelled=True))
        n = validate(path, allow_unlabelled=True)
        with open_h5(path) as f:
            labels = f["labels"][()]
        _unlabelled(source, labels, options)
        if "splits" in options:
            read_splits(options["splits"], n, _data_seed(options), labels >= 0)
        return os.path.abspath(path)
    if "splits" in options:
        read_splits(options["splits"], n, _data_seed(options))
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
    """Memory-map the events; splits from the split file or seeded, without the events
    labelled -1; per-batch transform."""
    events = memmap_dataset(path, "event_data")
    labels = np.asarray(memmap_dataset(path, "labels"), dtype=np.int64)
    labelled = labels >= 0  # -1: dropped (prepare announced it or refused the file)
    if "splits" in options:
        train, val, test = read_splits(options["splits"], len(labels), _data_seed(options),
                                       labelled, announce=False)
    else:
        kept = np.flatnonzero(labelled)
        train, val, test = (kept[part] for part in split_indices(kept.size, _data_seed(options)))
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
