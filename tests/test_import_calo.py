"""The ATLAS MET seed's own files (seed 002) given to ``--data`` as they are.

The seed's files hold one HDF5 dataset per image, each (N, 50, 64) float32 = η × φ E_T:
inputs ``cluster``, ``SK``, ``VorSK``, ``CSSK`` (and ``tracks_nm``, ``tracks_prime_nm`` when
its ``DataGenerator`` runs with ``tracks=True``), target ``truth_nm_barcode``, and
``entries`` whose first value is the number of events (its ``get_sets`` reads
``dataset["entries"][0]``). There is no MET dataset: the seed computes MET from an image with
``etmiss_utils.get_etmiss_components``. The files here are written with h5py directly, and
the expected MET is computed here from that definition, not by the module under test."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets import get_dataset
from datasets.base import DataError

SPEC = get_dataset("calo")
ETA_BINS, PHI_BINS = 50, 64  # the seed's image size
CALO = ["cluster", "SK", "VorSK", "CSSK"]
TRACKS = ["tracks_nm", "tracks_prime_nm"]
TRUTH = "truth_nm_barcode"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCITUNE_CACHE", str(tmp_path))


def write_seed_file(path: Path, n: int = 12, *, names=(*CALO, *TRACKS), entries: int | None = None,
                    seed: int = 0, nan_in: str | None = None) -> dict[str, np.ndarray]:
    """A file in the seed's layout; returns the arrays written (by name)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in (*names, TRUTH):
        image = rng.exponential(1.0, (n, ETA_BINS, PHI_BINS)).astype(np.float32)
        image *= rng.random((n, ETA_BINS, PHI_BINS)) < 0.2  # sparse, like E_T images
        arrays[name] = image
    # a hard-scatter object in the truth image, so that the true MET is large and its
    # direction depends on where the energy is (φ bin 5, i.e. near φ = −π)
    arrays[TRUTH][:, 20, 5] += 150.0
    if nan_in is not None:
        arrays[nan_in][3, 1, 2] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, image in arrays.items():
            f.create_dataset(name, data=image)
        f.create_dataset("entries", data=np.array([n if entries is None else entries]))
    return arrays


def seed_met(truth: np.ndarray) -> np.ndarray:
    """MET (N, 2) of truth images (N, η, φ) as the seed's etmiss_utils defines it: φ bin centres
    of ``np.histogram([], phi_bins, range=(phi_min, phi_max))`` over [−π, π), each bin
    weighted by (−cos φ, −sin φ), summed over every (η, φ) bin."""
    _, edges = np.histogram([], PHI_BINS, range=(-math.pi, math.pi))
    centres = (edges[1:] + edges[:-1]) / 2
    phi_x = np.tile(-np.cos(centres), (ETA_BINS, 1))
    phi_y = np.tile(-np.sin(centres), (ETA_BINS, 1))
    truth = truth.astype(np.float64)
    return np.stack([(phi_x * truth).sum(axis=(1, 2)), (phi_y * truth).sum(axis=(1, 2))], axis=1)


def prepare_and_load(path: Path, options=None):
    options = options or {}
    prepared = SPEC.prepare(str(path), 0, 0, options)
    return prepared, SPEC.load(prepared, 0, options)


def cache_entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "datasets").glob("*.h5"))


def test_seed_file_is_read_as_it_is(tmp_path):
    path = tmp_path / "data" / "sample_00_fixed.h5"
    written = write_seed_file(path)
    prepared, data = prepare_and_load(path)
    assert Path(prepared).parent == tmp_path / "datasets" and prepared != str(path)
    assert data.info.extra["channels"] == (*CALO, *TRACKS)
    assert data.info.input_shape == (6, ETA_BINS, PHI_BINS)
    x = np.asarray(data.arrays["x"])
    assert x.shape == (12, ETA_BINS, PHI_BINS, 6)
    for c, name in enumerate((*CALO, *TRACKS)):
        np.testing.assert_array_equal(x[..., c], written[name], err_msg=name)
    np.testing.assert_array_equal(np.asarray(data.arrays["truth"]), written[TRUTH])
    expected = seed_met(written[TRUTH])
    assert np.linalg.norm(expected, axis=1).min() > 60  # a MET that a wrong φ would change
    np.testing.assert_allclose(data.arrays["met"], expected, rtol=1e-5, atol=1e-3)
    # what a model sees: channels first, in units of 10 GeV
    batch = np.asarray(data.batch("x", np.array([0, 4]), {}))
    np.testing.assert_allclose(batch[1, 5], written["tracks_prime_nm"][4] / 10.0, rtol=1e-6)
    with h5py.File(prepared, "r") as f:
        assert f.attrs["imported_from"] == str(path)
        assert len(f.attrs["source_sha256"]) == 64
        assert str(f.attrs["importer"]).startswith("atlas_met v")


def test_only_the_first_entries_events_are_read(tmp_path):
    """The seed's get_sets takes ``entries[0]`` events of a file, not all its rows."""
    path = tmp_path / "data" / "sample.h5"
    written = write_seed_file(path, n=12, entries=9)
    _, data = prepare_and_load(path)
    assert len(data.arrays["met"]) == 9
    np.testing.assert_array_equal(np.asarray(data.arrays["x"])[..., 0], written["cluster"][:9])
    np.testing.assert_allclose(data.arrays["met"], seed_met(written[TRUTH][:9]),
                               rtol=1e-5, atol=1e-3)


def test_one_conversion_per_content(tmp_path):
    path = tmp_path / "data" / "sample.h5"
    write_seed_file(path)
    first = SPEC.prepare(str(path), 0, 0, {})
    stamp = Path(first).stat().st_mtime_ns
    assert SPEC.prepare(str(path), 0, 0, {}) == first
    assert Path(first).stat().st_mtime_ns == stamp and len(cache_entries(tmp_path)) == 1
    write_seed_file(path, seed=1)
    assert SPEC.prepare(str(path), 0, 0, {}) != first and len(cache_entries(tmp_path)) == 2


def test_a_folder_of_seed_files_is_read_in_name_order(tmp_path):
    a = write_seed_file(tmp_path / "data" / "sample_00.h5", n=5, seed=1)
    b = write_seed_file(tmp_path / "data" / "sample_01.h5", n=7, seed=2)
    _, data = prepare_and_load(tmp_path / "data")
    np.testing.assert_array_equal(np.asarray(data.arrays["truth"]),
                                  np.concatenate([a[TRUTH], b[TRUTH]]))
    np.testing.assert_allclose(data.arrays["met"], seed_met(np.concatenate([a[TRUTH], b[TRUTH]])),
                               rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("names,options,missing", [
    ([c for c in CALO if c != "VorSK"] + TRACKS, {}, "VorSK"),
    ([*CALO, "tracks_nm"], {}, "tracks_prime_nm"),
    (CALO, {"tracks": "yes"}, "tracks_nm, tracks_prime_nm"),
])
def test_a_missing_channel_is_named_against_the_users_file(tmp_path, names, options, missing):
    path = tmp_path / "data" / "sample.h5"
    write_seed_file(path, names=names)
    with pytest.raises(DataError) as caught:
        SPEC.prepare(str(path), 0, 0, options)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and missing in message
    assert "missing dataset 'images'" not in message
    assert cache_entries(tmp_path) == []


def test_a_missing_truth_image_is_named(tmp_path):
    path = tmp_path / "data" / "sample.h5"
    write_seed_file(path)
    with h5py.File(path, "a") as f:
        del f[TRUTH]
    with pytest.raises(DataError, match=f"{path}.*{TRUTH}"):
        SPEC.prepare(str(path), 0, 0, {})


def test_track_channels_that_are_not_needed_may_be_missing(tmp_path, capsys):
    path = tmp_path / "data" / "sample.h5"
    write_seed_file(path, names=[*CALO, "tracks_nm"])
    _, data = prepare_and_load(path, {"tracks": "no"})
    assert data.info.extra["channels"] == tuple(CALO)
    calo_only = tmp_path / "data" / "calo_only.h5"
    written = write_seed_file(calo_only, names=CALO)
    _, data = prepare_and_load(calo_only)
    assert data.info.extra["channels"] == tuple(CALO)
    np.testing.assert_array_equal(np.asarray(data.arrays["x"])[..., 3], written["CSSK"])
    assert f"{calo_only} has no track images" in capsys.readouterr().err


def test_nan_in_a_channel_is_named_with_its_row(tmp_path):
    path = tmp_path / "data" / "sample.h5"
    write_seed_file(path, nan_in="SK")
    with pytest.raises(DataError, match=f"{path}: dataset 'SK' holds NaN or inf \\(first at row 3\\)"):
        SPEC.prepare(str(path), 0, 0, {})
    assert cache_entries(tmp_path) == []


def test_the_platform_layout_is_still_read_in_place(tmp_path):
    path = tmp_path / "calo.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((5, 16, 16, 3), np.float32))
        f.create_dataset("met", data=np.zeros((5, 2), np.float32))
    assert SPEC.prepare(str(path), 0, 0, {}) == str(path)


def test_calo_channels_are_those_not_named_tracks():
    from datasets.calo import calo_channels

    assert calo_channels([*CALO, *TRACKS]) == [0, 1, 2, 3]
    assert calo_channels(["clusters", "clusters_sk", "tracks"]) == [0, 1]


def test_inputs_calo_drops_both_seed_track_channels(tmp_path):
    """``inputs=calo`` (the etmiss space's option) keeps the four calorimeter channels of a
    seed file and drops ``tracks_nm`` and ``tracks_prime_nm``."""
    from trainables.atlas import channel_selection

    path = tmp_path / "data" / "sample.h5"
    write_seed_file(path)
    _, data = prepare_and_load(path)
    assert channel_selection({"inputs": "all"}, data.info) == [0, 1, 2, 3, 4, 5]
    kept = channel_selection({"inputs": "calo"}, data.info)
    assert [data.info.extra["channels"][i] for i in kept] == CALO
