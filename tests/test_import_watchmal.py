"""WatChMaL's own files, as its code writes them, read directly: hit-array files (DataTools'
``*_digihits.h5`` + an ``mpmt_positions_file``) imported into the image layout, split files
without ``test_idxs`` and events labelled -1.

The writers here follow WatChMaL's DataTools (``dump_digi_hits``: dataset names, dtypes, the
``event_hits_index`` layout, labels ``{22: 0, 11: 1, 13: 2}`` else -1), and the reference
reader transcribes WatChMaL's ``CNNmPMTDataset.process_data``; neither uses the platform."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets import get_dataset
from datasets.base import DataError

PMTS_PER_MPMT = 19
# WatChMaL watchmal/dataset/cnn_mpmt/cnn_mpmt_dataset.py
BARREL_MPMT_MAP = np.array([6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 15, 16, 17, 12, 13, 14, 18])
BARREL_MPMT_MAP_NEW = np.array([0, 4, 5, 6, 1, 2, 3, 13, 14, 15, 16, 17, 18, 7, 8, 9, 10, 11, 12])
HORIZONTAL_FLIP_MPMT_MAP_NEW = np.array([0, 4, 3, 2, 1, 6, 5, 13, 12, 11, 10, 9, 8, 7, 18, 17, 16,
                                         15, 14])
VERTICAL_FLIP_MPMT_MAP_NEW = np.array([0, 1, 6, 5, 4, 3, 2, 7, 18, 17, 16, 15, 14, 13, 12, 11, 10,
                                       9, 8])
RAW = {"charge_norm": "none", "time_norm": "none"}  # model input = the stored values


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCITUNE_CACHE", str(tmp_path / "cache"))


def cache_files(tmp_path: Path) -> list[str]:
    folder = tmp_path / "cache" / "datasets"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def image_positions(seed: int = 0) -> np.ndarray:
    """A small detector as WatChMaL's positions files lay it out: a 24×20 image with end-caps
    above (rows 0-3) and below (rows 20-23) a 16-row barrel; mPMT ids in shuffled order."""
    cap = [(0, 9), (0, 10), *[(r, c) for r in (1, 2) for c in range(8, 12)], (3, 9), (3, 10)]
    pixels = cap + [(r, c) for r in range(4, 20) for c in range(20)] + [(23 - r, c) for r, c in cap]
    order = np.random.default_rng(seed).permutation(len(pixels))
    return np.array(pixels, dtype=np.int64)[order]


def write_digihits(path: Path, labels, seed: int = 0, positions: np.ndarray | None = None,
                   **overrides) -> dict:
    """A hit-array file as WatChMaL's DataTools ``dump_digi_hits`` writes it; returns the
    per-event hits for the reference reader."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    n_pmts = PMTS_PER_MPMT * len(image_positions() if positions is None else positions)
    events = []
    for i in range(n):
        count = 0 if i == 1 else int(rng.integers(5, 60))  # event 1 has no hits at all
        pmts = rng.choice(n_pmts, size=count, replace=False).astype(np.int32)
        events.append((pmts, rng.uniform(0.3, 12, count).astype(np.float32),
                       rng.uniform(900, 1100, count).astype(np.float32)))
    starts = np.cumsum([0] + [len(e[0]) for e in events[:-1]]).astype(np.int64)
    datasets = {
        "labels": np.asarray(labels, dtype=np.int32),
        "event_ids": np.arange(n, dtype=np.int32),
        "hit_time": np.concatenate([e[2] for e in events]),
        "hit_charge": np.concatenate([e[1] for e in events]),
        "hit_pmt": np.concatenate([e[0] for e in events]),
        "event_hits_index": starts,
        "energies": rng.uniform(50, 1000, (n, 1)).astype(np.float32),
        "positions": rng.normal(size=(n, 1, 3)).astype(np.float32),
        "directions": rng.normal(size=(n, 1, 3)).astype(np.float32),
        "angles": rng.uniform(0, 3, (n, 2)).astype(np.float32),
        "veto": np.zeros(n, dtype=np.bool_),
        "veto2": np.zeros(n, dtype=np.bool_),
    }
    datasets.update(overrides)
    with h5py.File(path, "w") as f:
        f.create_dataset("root_files", shape=(n,), dtype=h5py.special_dtype(vlen=str))
        f["root_files"][:] = [f"wcsim_{i % 3}.root" for i in range(n)]
        for key, value in datasets.items():
            if value is not None:
                f.create_dataset(key, data=value)
    return {"events": events, "labels": np.asarray(labels)}


def watchmal_image(pmts, values, positions, barrel_map) -> np.ndarray:
    """WatChMaL's ``CNNmPMTDataset.process_data`` for one channel: (19, H, W)."""
    mpmts, channels = pmts // PMTS_PER_MPMT, pmts % PMTS_PER_MPMT
    rows, cols = positions[mpmts, 0], positions[mpmts, 1]
    height, width = np.max(positions, axis=0) + 1
    data = np.zeros((PMTS_PER_MPMT, height, width), dtype=np.float32)
    data[channels, rows, cols] = values
    row_ids, row_counts = np.unique(positions[:, 0], return_counts=True)
    barrel_rows = row_ids[row_counts == width]
    barrel = np.s_[..., np.min(barrel_rows):np.max(barrel_rows) + 1, :]
    data[barrel] = data[barrel_map][barrel]
    return data


def watchmal_event(hits, positions, barrel_map=BARREL_MPMT_MAP) -> np.ndarray:
    """WatChMaL's default channels ['charge', 'time']: (38, H, W)."""
    pmts, charge, time = hits
    return np.concatenate([watchmal_image(pmts, charge, positions, barrel_map),
                           watchmal_image(pmts, time, positions, barrel_map)])


def write_image_file(path: Path, labels) -> Path:
    """A 2019-20 WatChMaL image-layout file (event_data (N, 40, 40, 38))."""
    n = len(labels)
    rng = np.random.default_rng(1)
    data = np.zeros((n, 40, 40, 38), dtype=np.float32)
    data[:, 10:30, 5:35, :19] = rng.uniform(0, 3, (n, 20, 30, 19))
    data[..., 19:] = np.where(data[..., :19] > 0, 950.0, 0.0)
    with h5py.File(path, "w") as f:
        f.create_dataset("event_data", data=data)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int32))
    return path


# -- hit-array files -------------------------------------------------------------------------

def test_hit_array_file_gives_watchmal_readers_images(tmp_path, capsys):
    positions = image_positions()
    labels = [0, 1, 2, -1, 1, 2, 0, 1, 2, 0, 1, -1, 2, 0, 1]
    truth = write_digihits(tmp_path / "digihits.h5", labels)
    np.savez(tmp_path / "mpmt_positions.npz", mpmt_image_positions=positions)
    spec = get_dataset("watchmal")
    options = {"mpmt_positions": str(tmp_path / "mpmt_positions.npz"), **RAW}
    prepared = spec.prepare(str(tmp_path / "digihits.h5"), 0, 0, options)
    data = spec.load(prepared, 0, options)

    stored = np.asarray(data.arrays["x"])
    assert stored.shape == (15, 24, 20, 38) and data.info.input_shape == (38, 24, 20)
    for i, hits in enumerate(truth["events"]):
        np.testing.assert_array_equal(stored[i].transpose(2, 0, 1), watchmal_event(hits, positions))
    assert not stored[1].any()  # the event without hits is an empty image
    kept = np.sort(np.concatenate([data.train, data.val, data.test]))
    np.testing.assert_array_equal(kept, np.flatnonzero(truth["labels"] >= 0))
    batch = data.batch("x", kept[:4], {"input_channels": "charge_time"})
    expected = np.stack([watchmal_event(truth["events"][i], positions) for i in kept[:4]])
    np.testing.assert_array_equal(batch, expected)
    np.testing.assert_array_equal(data.arrays["y"][kept], truth["labels"][kept])

    # one hit by hand: PMT 0 of a barrel mPMT lands in channel 6, WatChMaL's barrel order
    # (old convention), PMT 0 of an end-cap mPMT stays in channel 0
    barrel_m = int(np.flatnonzero(positions[:, 0] == 10)[0])
    cap_m = int(np.flatnonzero(positions[:, 0] == 0)[0])
    row, col = positions[barrel_m]
    single = tmp_path / "single.h5"
    write_digihits(single, [0, 1, 2], hit_pmt=np.array([19 * barrel_m, 19 * cap_m], np.int32),
                   hit_charge=np.array([5.0, 7.0], np.float32),
                   hit_time=np.array([950.0, 960.0], np.float32),
                   event_hits_index=np.array([0, 2, 2], np.int64))
    one = np.asarray(spec.load(spec.prepare(str(single), 0, 0, options), 0, options).arrays["x"])
    assert one[0, row, col, 6] == 5.0 and one[0, row, col, 19 + 6] == 950.0
    cap_row, cap_col = positions[cap_m]
    assert one[0, cap_row, cap_col, 0] == 7.0 and one[0, cap_row, cap_col, 19] == 960.0
    assert np.count_nonzero(one) == 4 and not one[1:].any()

    with h5py.File(prepared) as f:  # provenance of the import, extra datasets copied
        assert f.attrs["imported_from"] == str((tmp_path / "digihits.h5").absolute())
        assert f.attrs["importer"] == "watchmal-hits v1"
        assert f.attrs["import_mpmt_convention"] == "old"
        np.testing.assert_array_equal(f["energies"][()], h5py.File(tmp_path / "digihits.h5")
                                      ["energies"][()])
        assert f["root_files"][2].decode() == "wcsim_2.root"
    err = capsys.readouterr().err
    assert "data: assuming the 2 events of" in err and "digihits.h5 labelled -1" in err
    assert "mpmt_convention=new" in err
    # converted once: the same bytes and options come from the cache
    assert spec.prepare(str(tmp_path / "digihits.h5"), 0, 0, options) == prepared


def test_new_mpmt_convention_and_npy_positions(tmp_path):
    positions = image_positions(seed=3)
    truth = write_digihits(tmp_path / "wcte.h5", [1, 2, 1, 2, 1, 2], positions=positions, seed=2)
    np.save(tmp_path / "positions.npy", positions)
    spec = get_dataset("watchmal")
    options = {"mpmt_positions": str(tmp_path / "positions.npy"), "mpmt_convention": "new", **RAW}
    data = spec.load(spec.prepare(str(tmp_path / "wcte.h5"), 0, 0, options), 0, options)
    stored = np.asarray(data.arrays["x"])
    for i, hits in enumerate(truth["events"]):
        np.testing.assert_array_equal(stored[i].transpose(2, 0, 1),
                                      watchmal_event(hits, positions, BARREL_MPMT_MAP_NEW))
    maps = data.info.extra["flip_channel_maps"]
    assert (maps["horizontal"] == HORIZONTAL_FLIP_MPMT_MAP_NEW).all()
    assert (maps["vertical"] == VERTICAL_FLIP_MPMT_MAP_NEW).all()
    old = {**options, "mpmt_convention": "old"}
    other = np.asarray(spec.load(spec.prepare(str(tmp_path / "wcte.h5"), 0, 0, old), 0, old)
                       .arrays["x"])
    assert not np.array_equal(other, stored)  # the convention changes the barrel's channels


def test_positions_can_live_in_the_hit_file(tmp_path):
    positions = image_positions()
    path = tmp_path / "own.h5"
    truth = write_digihits(path, [0, 1, 2, 0], mpmt_image_positions=positions)
    spec = get_dataset("watchmal")
    data = spec.load(spec.prepare(str(path), 0, 0, RAW), 0, RAW)
    np.testing.assert_array_equal(np.asarray(data.arrays["x"])[3].transpose(2, 0, 1),
                                  watchmal_event(truth["events"][3], positions))


BAD_HIT_FILES = [
    ("no positions", {}, None, "mpmt_positions=FILE.npz"),
    ("npz without the key", {}, "wrong_key", "no array 'mpmt_image_positions'"),
    ("PMT beyond the detector", {"hit_pmt": "big"}, "npz", "outside the 344 mPMTs"),
    ("hit arrays differ", {"hit_time": np.zeros(3, np.float32)}, "npz", "hit arrays must match"),
    ("index falls", {"event_hits_index": np.array([0, 9, 4, 12], np.int64)}, "npz",
     "'event_hits_index' must rise"),
    ("NaN charge", {"hit_charge": "nan"}, "npz", "'hit_charge' holds NaN"),
    ("labels -2", {"labels": np.array([0, 1, -2, 2], np.int32)}, "npz", "labels range"),
    ("float pmt ids", {"hit_pmt": "float"}, "npz", "expected integers"),
]


@pytest.mark.parametrize("name,overrides,positions_file,message", BAD_HIT_FILES,
                         ids=[b[0] for b in BAD_HIT_FILES])
def test_bad_hit_files_are_refused_by_name(tmp_path, name, overrides, positions_file, message):
    path = tmp_path / "bad_digihits.h5"
    probe = write_digihits(path, [0, 1, 2, 0])
    n_hits = sum(len(e[0]) for e in probe["events"])
    special = {"big": np.full(n_hits, 19 * 344, np.int32),
               "nan": np.full(n_hits, np.nan, np.float32),
               "float": np.zeros(n_hits, np.float32)}
    overrides = {k: special[v] if isinstance(v, str) else v for k, v in overrides.items()}
    write_digihits(path, overrides.pop("labels", [0, 1, 2, 0]), **overrides)
    options = {}
    if positions_file == "npz":
        np.savez(tmp_path / "pos.npz", mpmt_image_positions=image_positions())
        options["mpmt_positions"] = str(tmp_path / "pos.npz")
    elif positions_file == "wrong_key":
        np.savez(tmp_path / "pos.npz", positions=image_positions())
        options["mpmt_positions"] = str(tmp_path / "pos.npz")
    with pytest.raises(DataError, match=message) as caught:
        get_dataset("watchmal").prepare(str(path), 0, 0, options)
    text = str(caught.value)
    assert "\n" not in text and ("bad_digihits.h5" in text or "pos.npz" in text)
    assert "cache" not in text
    assert not [f for f in cache_files(tmp_path) if f.endswith(".h5")]  # nothing half-written


# -- split files without test_idxs ----------------------------------------------------------

def test_split_file_without_test_tests_on_the_rest(tmp_path, capsys):
    path = write_image_file(tmp_path / "events.h5", np.arange(30) % 3)
    split = tmp_path / "train_val.npz"
    np.savez(split, train_idxs=np.arange(0, 20), val_idxs=np.arange(20, 25))
    spec = get_dataset("watchmal")
    options = {"splits": str(split)}
    data = spec.load(spec.prepare(str(path), 0, 0, options), 0, options)
    assert list(data.train) == list(range(20)) and list(data.val) == list(range(20, 25))
    assert list(data.test) == list(range(25, 30))
    err = capsys.readouterr().err
    assert "data: assuming" in err and "train_val.npz has no test_idxs" in err
    assert "the 5 events in neither" in err


def test_split_file_covering_every_event_tests_on_a_seeded_half_of_val(tmp_path, capsys):
    path = write_image_file(tmp_path / "events.h5", np.arange(30) % 3)
    split = tmp_path / "all.npz"
    np.savez(split, train_idxs=np.arange(0, 20), val_idxs=np.arange(20, 30))
    spec = get_dataset("watchmal")
    options = {"splits": str(split)}
    data = spec.load(spec.prepare(str(path), 0, 0, options), 0, options)
    assert list(data.train) == list(range(20))
    assert len(data.val) == 5 and len(data.test) == 5
    assert sorted([*data.val, *data.test]) == list(range(20, 30))
    again = spec.load(spec.prepare(str(path), 0, 0, options), 0, options)
    assert list(again.test) == list(data.test)  # seeded: the same every time
    reseeded = {**options, "data_seed": "5"}
    other = spec.load(spec.prepare(str(path), 0, 0, reseeded), 0, reseeded)
    assert sorted([*other.val, *other.test]) == list(range(20, 30))
    assert list(other.test) != list(data.test)
    err = capsys.readouterr().err
    assert "seeded half of val_idxs (5 events, data_seed=0)" in err


def test_split_file_without_test_and_one_val_event_is_refused(tmp_path):
    path = write_image_file(tmp_path / "events.h5", np.arange(30) % 3)
    split = tmp_path / "tight.npz"
    np.savez(split, train_idxs=np.arange(0, 29), val_idxs=np.array([29]))
    with pytest.raises(DataError, match=r"tight.npz: no test_idxs.*add test_idxs"):
        get_dataset("watchmal").prepare(str(path), 0, 0, {"splits": str(split)})


# -- events labelled -1 ----------------------------------------------------------------------

def test_unlabelled_events_are_dropped_and_counted(tmp_path, capsys):
    labels = np.arange(30) % 3
    labels[[2, 7, 11, 23]] = -1
    path = write_image_file(tmp_path / "datatools.h5", labels)
    spec = get_dataset("watchmal")
    data = spec.load(spec.prepare(str(path), 0, 0, {}), 0, {})
    everything = np.concatenate([data.train, data.val, data.test])
    assert sorted(everything) == sorted(np.flatnonzero(labels >= 0))
    assert (data.arrays["y"][everything] >= 0).all() and data.info.num_classes == 3
    err = capsys.readouterr().err
    assert "the 4 events of" in err and "datatools.h5 labelled -1" in err
    assert "unlabelled=error" in err

    split = tmp_path / "split.npz"  # a split file naming them: they leave every split
    np.savez(split, train_idxs=np.arange(0, 20), val_idxs=np.arange(20, 25),
             test_idxs=np.arange(25, 30))
    options = {"splits": str(split)}
    data = spec.load(spec.prepare(str(path), 0, 0, options), 0, options)
    assert list(data.train) == [i for i in range(20) if i not in (2, 7, 11)]
    assert list(data.val) == [20, 21, 22, 24] and list(data.test) == list(range(25, 30))

    with pytest.raises(DataError, match=r"datatools.h5: 4 events are labelled -1.*unlabelled=drop"):
        spec.prepare(str(path), 0, 0, {"unlabelled": "error"})
    with pytest.raises(DataError, match="--data-option unlabelled=keep: use one of drop, error"):
        spec.prepare(str(path), 0, 0, {"unlabelled": "keep"})


def test_a_split_of_only_unlabelled_events_is_refused(tmp_path):
    labels = np.arange(30) % 3
    labels[20:25] = -1
    path = write_image_file(tmp_path / "events.h5", labels)
    split = tmp_path / "split.npz"
    np.savez(split, train_idxs=np.arange(0, 20), val_idxs=np.arange(20, 25))
    with pytest.raises(DataError, match="val_idxs holds only events labelled -1"):
        get_dataset("watchmal").prepare(str(path), 0, 0, {"splits": str(split)})
