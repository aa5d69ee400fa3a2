"""Tests for the LArCV-like liquid-argon TPC image simulator in ``datasets/larcv_physics.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from datasets.larcv_physics import (  # noqa: E402
    SATURATION,
    THRESHOLD,
    TOPOLOGIES,
    bragg_dedx,
    render_track,
    simulate_images,
)

TRACK, SHOWER = 0, 1


@pytest.fixture(scope="module")
def sample32() -> tuple[np.ndarray, np.ndarray]:
    return simulate_images(300, 32, seed=7)


@pytest.fixture(scope="module")
def sample64() -> tuple[np.ndarray, np.ndarray]:
    return simulate_images(90, 64, seed=8)


def occupancy(images: np.ndarray) -> np.ndarray:
    return (images > 0).mean(axis=(1, 2))


def centroid_offsets(images: np.ndarray) -> np.ndarray:
    """(n,) distance of each image's charge centroid from the image centre (px)."""
    size = images.shape[1]
    idx = np.arange(size)
    total = images.sum(axis=(1, 2))
    cx = images.sum(axis=1) @ idx / total
    cy = images.sum(axis=2) @ idx / total
    c = 0.5 * (size - 1)
    return np.hypot(cx - c, cy - c)


def pca_ratio(image: np.ndarray) -> float:
    """sqrt(minor / major) eigenvalue of the charge-weighted pixel covariance: 0 for a thin line."""
    ys, xs = np.nonzero(image)
    w = image[ys, xs] / image[ys, xs].sum()
    cov = np.cov(np.stack((xs, ys)), aweights=w, bias=True)
    ev = np.linalg.eigvalsh(cov)
    return float(np.sqrt(max(ev[0], 0.0) / ev[1]))


def test_topologies() -> None:
    assert TOPOLOGIES == ("track", "shower", "track+shower")


def test_shapes_dtypes_values(sample32: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = sample32
    assert images.shape == (300, 32, 32) and images.dtype == np.float32
    assert labels.shape == (300,) and labels.dtype == np.int64
    assert np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= SATURATION
    assert set(np.unique(labels)) == {0, 1, 2}
    assert np.bincount(labels, minlength=3).min() >= 70  # roughly balanced
    # zero suppression: every non-zero pixel is above threshold
    assert images[images > 0].min() >= THRESHOLD


def test_deterministic() -> None:
    a, la = simulate_images(20, 32, seed=3)
    b, lb = simulate_images(20, 32, seed=3)
    c, _ = simulate_images(20, 32, seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("which", ["sample32", "sample64"])
def test_occupancy(which: str, request: pytest.FixtureRequest) -> None:
    images, _ = request.getfixturevalue(which)
    occ = occupancy(images)
    assert occ.min() >= 0.01
    assert np.median(occ) < 0.5
    assert 0.02 < np.median(occ) < 0.3  # a few % to ~20 %: sparse but not empty
    assert (occ < 0.9).all()


def test_min_occupancy_is_respected() -> None:
    images, _ = simulate_images(30, 32, seed=11, min_occupancy=0.12)
    assert occupancy(images).min() >= 0.12


@pytest.mark.parametrize("which", ["sample32", "sample64"])
def test_centroid_at_centre(which: str, request: pytest.FixtureRequest) -> None:
    images, _ = request.getfixturevalue(which)
    assert centroid_offsets(images).max() <= 1.5


@pytest.mark.parametrize("size", [16, 32, 64])
def test_sizes(size: int) -> None:
    images, labels = simulate_images(6, size, seed=1)
    assert images.shape == (6, size, size) and labels.shape == (6,)
    assert (occupancy(images) >= 0.01).all()


def test_empty_request() -> None:
    images, labels = simulate_images(0, 32, seed=0)
    assert images.shape == (0, 32, 32) and labels.shape == (0,)


@pytest.mark.parametrize("size", [0, -32, 8, 15, 32.0, "32", True, None])
def test_bad_sizes_raise(size: object) -> None:
    with pytest.raises(ValueError):
        simulate_images(2, size, seed=0)  # type: ignore[arg-type]


def test_bad_min_occupancy_raises() -> None:
    with pytest.raises(ValueError):
        simulate_images(2, 32, seed=0, min_occupancy=0.9)


def test_progress_reports_increments() -> None:
    calls: list[int] = []
    simulate_images(150, 16, seed=2, progress=calls.append)
    assert sum(calls) == 150
    assert max(calls) <= 64 and len(calls) >= 3


def test_showers_wider_than_tracks(sample32: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = sample32
    ratios = np.array([pca_ratio(im) for im in images])
    tracks, showers = ratios[labels == TRACK], ratios[labels == SHOWER]
    assert np.median(tracks) < 0.15  # most track images are thin lines
    assert np.median(showers) > 1.8 * np.median(tracks)
    # showers carry many faint pixels: their mean non-zero charge is lower than tracks'
    assert images[labels == SHOWER][images[labels == SHOWER] > 0].mean() < 0.8 * \
        images[labels == TRACK][images[labels == TRACK] > 0].mean()


def test_bragg_peak_at_the_end_of_a_stopping_track() -> None:
    # horizontal track from column 8 to column 56 along row 32
    stopping = render_track(64, (8.0, 32.0), 0.0, 48.0, stopping=True, seed=1).sum(axis=0)
    middle, end = stopping[28:36].mean(), stopping[50:55].mean()
    assert end > 1.8 * middle
    mip = render_track(64, (8.0, 32.0), 0.0, 48.0, stopping=False, seed=1).sum(axis=0)
    middle, end = mip[28:36].mean(), mip[50:55].mean()
    assert 0.7 < end / middle < 1.4  # no Bragg peak for a through-going MIP
    assert 0.8 < mip[12:52].mean() < 1.2  # units: a MIP deposits ~1 per pixel of path


def test_track_is_thin() -> None:
    image = render_track(64, (8.0, 32.5), 0.0, 48.0, stopping=False, seed=2)
    rows = image[:, 20:44].sum(axis=1)
    assert rows[31:34].sum() > 0.95 * rows.sum()  # ~all charge within +-1 px of the axis


def test_bragg_dedx_law() -> None:
    r = np.array([1.0, 5.0, 20.0, 60.0])
    dedx = bragg_dedx(r)
    assert (np.diff(dedx) < 0).all() and (dedx >= 1.0).all()
    # ~R^-0.42 away from the caps
    np.testing.assert_allclose(dedx[1] / dedx[2], 4.0**0.42, rtol=1e-6)
    assert (bragg_dedx(r, mass_ratio=0.1126) <= dedx).all()
