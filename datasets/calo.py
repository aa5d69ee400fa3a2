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

The seed's own files (ATLAS MET, seed 002) are read as they are and converted once into this
layout (:func:`datasets.importing.import_once`: cached by content, provenance recorded). Such
a file holds one dataset per image, each (N, 50, 64) = η × φ E_T in GeV, and ``entries``
(``entries[0]`` events are used, as the seed's ``get_sets`` does):

- inputs, in the seed's ``DataGenerator`` channel order: ``cluster``, ``SK``, ``VorSK``,
  ``CSSK``, and with tracks ``tracks_nm``, ``tracks_prime_nm`` (``--data-option tracks=auto``
  imports them when present, ``yes`` requires them, ``no`` leaves them out); the channel
  names recorded are the dataset names;
- target: ``truth_nm_barcode`` (the seed's ``Y``), stored as ``truth``;
- ``met``: computed from the truth image as the seed's ``etmiss_utils.get_etmiss_components``
  does, Σ E_T·(−cos φ, −sin φ) over bins at their φ centres, φ binned over [−π, π) (the
  platform's φ convention, which every MET in it uses; the seed reads its range from a
  ``config.json`` that is not public). η does not enter; ``eta_max`` is recorded as 2.5.

Every channel whose name starts with ``tracks`` is a track channel (:func:`is_track_channel`):
``inputs=calo`` drops them all.
"""

from __future__ import annotations

import json
import os
import sys
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
    memmap_dataset,
    no_such_data,
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
    "tracks": "ATLAS MET files: import tracks_nm and tracks_prime_nm: auto (when present, "
              "default), yes (required), no (left out)",
}
#: the seed's files (ATLAS MET): input images in its DataGenerator's channel order, its
#: optional track images, and its target (truth) image
SEED_INPUTS = ("cluster", "SK", "VorSK", "CSSK")
SEED_TRACKS = ("tracks_nm", "tracks_prime_nm")
SEED_TARGET = "truth_nm_barcode"
SEED_IMPORTER = "atlas_met"
SEED_IMPORT_VERSION = 1
IMPORT_BLOCK_BYTES = 64 * 2**20  # rows converted per step (all channels together)
TRACK_PREFIX = "tracks"


def is_track_channel(name: str) -> bool:
    """A track (not calorimeter) channel: its name starts with ``tracks`` (the synthetic
    ``tracks``, the seed's ``tracks_nm`` and ``tracks_prime_nm``)."""
    return str(name).startswith(TRACK_PREFIX)


def calo_channels(names: Sequence[str]) -> list[int]:
    """Indices of the calorimeter channels among ``names`` (what ``inputs=calo`` keeps)."""
    return [i for i, name in enumerate(names) if not is_track_channel(name)]


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
        if not target.exists():  # float32 images (3 channels) and truth, met (2)
            check_room(target, samples, bins * bins * 4 * 4 + 2 * 4, memory_factor=2.0,  # 1.7 measured
                       fewest=30)
            generate(samples, bins, mu, data_seed, target)
        return str(target)
    if not os.path.exists(path):
        raise no_such_data(path)
    if os.path.isdir(path) or _is_seed_file(path):
        return import_seed_files(path, options)
    validate(path)
    return os.path.abspath(path)


def _is_seed_file(path: str) -> bool:
    """A file in the seed's layout (separate image datasets), not the platform's ``images``."""
    with open_h5(path) as f:
        return "images" not in f and any(k in f for k in (*SEED_INPUTS, *SEED_TRACKS, SEED_TARGET))


def _tracks_option(options: Mapping[str, str]) -> str:
    value = str(options.get("tracks", "auto")).lower()
    value = {"true": "yes", "1": "yes", "false": "no", "0": "no"}.get(value, value)
    if value not in ("auto", "yes", "no"):
        raise DataError(f"--data-option tracks must be auto, yes or no (got {options['tracks']})")
    return value


def _survey(path: Path, tracks: str) -> tuple[int, tuple[int, ...], list[str]]:
    """Check one seed file's datasets (names, shapes, ``entries``) without reading images;
    return its event count, its image shape and the track datasets it holds."""
    import h5py

    with open_h5(str(path)) as f:
        def present(key: str) -> bool:
            return key in f and isinstance(f[key], h5py.Dataset)

        have_tracks = [k for k in SEED_TRACKS if present(k)]
        needed = [*SEED_INPUTS, SEED_TARGET]
        if tracks == "yes" or (tracks == "auto" and have_tracks):
            needed += SEED_TRACKS
        missing = [k for k in needed if not present(k)]
        if missing:
            hint = ("; or --data-option tracks=no to train without tracks"
                    if set(missing) <= set(SEED_TRACKS) else "")
            raise DataError(f"--data {path}: ATLAS MET file lacks dataset(s) {', '.join(missing)} "
                            f"(present: {', '.join(sorted(f.keys())) or 'none'}){hint}")
        shape = f[SEED_INPUTS[0]].shape
        for key in needed:
            ds = f[key]
            if ds.ndim != 3 or ds.shape != shape:
                raise DataError(f"--data {path}: dataset '{key}' has shape {ds.shape}, expected "
                                f"(N, n_eta, n_phi) = {shape} like '{SEED_INPUTS[0]}'")
            if ds.dtype.kind not in "iuf":
                raise DataError(f"--data {path}: dataset '{key}' has non-numeric dtype {ds.dtype}")
        rows = shape[0]
        n = rows
        if present("entries"):
            entries = np.asarray(f["entries"][()]).reshape(-1)
            if entries.size == 0 or entries.dtype.kind not in "iuf" or \
                    not float(entries[0]).is_integer() or not 0 <= entries[0] <= rows:
                raise DataError(f"--data {path}: 'entries' should hold the number of events "
                                f"(0 to the {rows} rows of the images) first; it holds "
                                f"{entries[:3].tolist()}")
            n = int(entries[0])
        return n, tuple(shape[1:]), [k for k in SEED_TRACKS if k in needed]


def _convert(files: Sequence[Path], counts: Sequence[int], channels: Sequence[str],
             out: Any) -> None:
    """Stack the seed files' channel datasets into ``images`` (N, η, φ, C), copy the truth
    image into ``truth`` and compute ``met`` from it, block by block with a progress bar."""
    from tqdm import tqdm

    from datasets.calo_physics import met_of_image

    with open_h5(str(files[0])) as f:
        n_eta, n_phi = f[SEED_INPUTS[0]].shape[1:]
    total = int(sum(counts))
    row_bytes = n_eta * n_phi * (len(channels) + 1) * 4
    images = out.create_dataset("images", (total, n_eta, n_phi, len(channels)), dtype=np.float32)
    truth = out.create_dataset("truth", (total, n_eta, n_phi), dtype=np.float32)
    met = out.create_dataset("met", (total, 2), dtype=np.float32)
    block = max(1, IMPORT_BLOCK_BYTES // row_bytes)
    done = 0
    with tqdm(total=total, desc="importing ATLAS MET images", unit="event", file=sys.stderr,
              disable=total * row_bytes < importing.PROGRESS_BYTES) as bar:
        for path, n in zip(files, counts, strict=True):
            with open_h5(str(path)) as f:
                for start in range(0, n, block):
                    stop = min(start + block, n)
                    stack = np.empty((stop - start, n_eta, n_phi, len(channels)), np.float32)
                    for c, key in enumerate((*channels, SEED_TARGET)):
                        rows = np.asarray(f[key][start:stop])
                        bad = ~np.isfinite(rows.reshape(rows.shape[0], -1)).all(axis=1)
                        if bad.any():
                            raise DataError(f"--data {path}: dataset '{key}' holds NaN or inf "
                                            f"(first at row {start + int(np.argmax(bad))}); "
                                            "clean or drop those events")
                        if key == SEED_TARGET:
                            truth[done + start:done + stop] = rows
                            met[done + start:done + stop] = met_of_image(rows)
                        else:
                            stack[..., c] = rows
                    images[done + start:done + stop] = stack
                    bar.update(stop - start)
            done += n


def import_seed_files(path: str, options: Mapping[str, str]) -> str:
    """The cached platform-layout file converted from the seed's ATLAS MET file(s) at
    ``path`` (a file, or a folder of ``*.h5`` / ``*.hdf5`` files, concatenated in name order)."""
    tracks = _tracks_option(options)
    files = importing.source_files(path, ["*.h5", "*.hdf5"],
                                   "ATLAS MET files (*.h5 with cluster, SK, VorSK, CSSK, "
                                   "truth_nm_barcode)")
    surveys = [_survey(f, tracks) for f in files]
    shapes = {s[1] for s in surveys}
    if len(shapes) > 1:
        raise DataError(f"--data {path}: the files' images differ in shape ({sorted(shapes)}); "
                        "pass files of one binning")
    with_tracks = {tuple(s[2]) for s in surveys}
    if len(with_tracks) > 1:
        lacking = next(f for f, s in zip(files, surveys, strict=True) if not s[2])
        raise DataError(f"--data {lacking}: ATLAS MET file lacks dataset(s) "
                        f"{', '.join(SEED_TRACKS)} that other files of --data {path} hold; "
                        "or --data-option tracks=no to train without tracks")
    channels = [*SEED_INPUTS, *with_tracks.pop()]
    if tracks == "auto" and len(channels) == len(SEED_INPUTS):
        importing.assume(f"{path} has no track images ({', '.join(SEED_TRACKS)}): the inputs are "
                         f"the calorimeter channels {', '.join(SEED_INPUTS)} "
                         "(--data-option tracks=yes requires the track images)")
    counts = [s[0] for s in surveys]

    def write(out: Any, sources: Sequence[Path]) -> None:
        _convert(sources, counts, channels, out)
        out.attrs["channels"] = json.dumps(channels)
        out.attrs["eta_max"] = 2.5
        out.attrs["target_dataset"] = SEED_TARGET
        out.attrs["met_from"] = f"{SEED_TARGET}: sum of E_T (-cos phi, -sin phi), phi in [-pi, pi)"
        out.attrs["source_entries"] = np.asarray(counts, dtype=np.int64)

    return importing.import_once(path, files, SEED_IMPORTER, SEED_IMPORT_VERSION, write,
                                 validate, {"channels": ",".join(channels)})


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
