"""Tests for the calorimeter-image MET generator in ``datasets/calo_physics.py``."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from datasets.calo_physics import (  # noqa: E402
    CHANNELS,
    MET_MAX,
    bin_centres,
    deposit,
    met_of_image,
    simulate_events,
    softkiller,
)

CL, SK, TRK = (CHANNELS.index(c) for c in ("clusters", "clusters_sk", "tracks"))


def rms(residual: np.ndarray) -> float:
    """RMS over all events and both components of a (n, 2) residual."""
    return float(np.sqrt(np.mean(np.square(residual))))


@pytest.fixture(scope="module")
def mu40() -> dict[str, np.ndarray]:
    return simulate_events(300, seed=7, mu=40.0)


def test_shapes_dtypes_and_ranges() -> None:
    out = simulate_events(20, seed=0, eta_bins=32, phi_bins=48, eta_max=3.2, mu=10.0)
    assert set(out) == {"images", "truth", "met"}
    assert out["images"].shape == (20, 32, 48, 3)
    assert out["truth"].shape == (20, 32, 48)
    assert out["met"].shape == (20, 2)
    for v in out.values():
        assert v.dtype == np.float32
        assert np.isfinite(v).all()
    assert (out["images"] >= 0).all() and (out["truth"] >= 0).all()
    # SoftKiller only removes bins; tracks stop at the tracker edge |eta| < 2.5.
    sk, cl = out["images"][..., SK], out["images"][..., CL]
    assert ((sk == cl) | (sk == 0)).all() and sk.sum() < cl.sum()
    eta = -3.2 + (np.arange(32) + 0.5) * 6.4 / 32
    assert (out["images"][:, np.abs(eta) > 2.5, :, TRK] == 0).all()
    assert out["images"][:, np.abs(eta) < 2.5, :, TRK].sum() > 0


def test_deterministic_in_seed_and_progress() -> None:
    calls: list[int] = []
    a = simulate_events(40, seed=3, eta_bins=16, phi_bins=16, progress=calls.append)
    b = simulate_events(40, seed=3, eta_bins=16, phi_bins=16)
    c = simulate_events(40, seed=4, eta_bins=16, phi_bins=16)
    assert sum(calls) == 40 and all(k > 0 for k in calls)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a[key], c[key])


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        simulate_events(-1, seed=0)
    with pytest.raises(ValueError):
        simulate_events(2, seed=0, mu=-1.0)


def test_bin_centres() -> None:
    np.testing.assert_allclose(
        bin_centres(4), [-0.75 * math.pi, -0.25 * math.pi, 0.25 * math.pi, 0.75 * math.pi]
    )


def test_met_of_image_hand_checked() -> None:
    img = np.zeros((3, 5), dtype=np.float32)
    img[1, 2] = 10.0  # phi_2 = -pi + 2.5 * 2 pi / 5 = 0
    np.testing.assert_allclose(met_of_image(img), [-10.0, 0.0], atol=1e-9)
    img4 = np.zeros((2, 4))
    img4[0, 2] = 10.0  # phi = pi / 4
    img4[1, 1] = 2.0  # phi = -pi / 4
    s = 10.0 / math.sqrt(2.0)
    t = 2.0 / math.sqrt(2.0)
    np.testing.assert_allclose(met_of_image(img4), [-s - t, -s + t], atol=1e-9)
    batch = np.stack([img, 2 * img])[None]  # (1, 2, 3, 5)
    assert met_of_image(batch).shape == (1, 2, 2)
    np.testing.assert_allclose(met_of_image(batch)[0, 1], [-20.0, 0.0], atol=1e-9)


def test_met_of_image_rotates_with_phi_roll() -> None:
    rng = np.random.default_rng(0)
    img = rng.exponential(1.0, (5, 16, 64))
    img[:, 3, 10] += 50.0  # a clear non-zero MET
    base = met_of_image(img)
    for k in (1, 5, 37):
        a = k * 2.0 * math.pi / 64
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        np.testing.assert_allclose(met_of_image(np.roll(img, k, axis=-1)), base @ rot.T, atol=1e-8)


def test_jet_at_phi_seam_wraps() -> None:
    ones = np.ones((1, 1))
    seam = deposit(50.0 * ones, 0.3 * ones, (math.pi - 0.02) * ones, 0.15 * ones)[0]
    cols = seam.sum(axis=0)
    assert cols[0] > 0.15 * 50 and cols[-1] > 0.15 * 50  # both edges of the image
    assert seam.sum() == pytest.approx(50.0, rel=1e-4)
    # The same jet half a turn away, rolled by half the image, is the identical image.
    centre = deposit(50.0 * ones, 0.3 * ones, -0.02 * ones, 0.15 * ones)[0]
    np.testing.assert_allclose(np.roll(centre, 32, axis=-1), seam, atol=1e-5)
    np.testing.assert_allclose(met_of_image(seam), -50.0 * np.array([-1.0, 0.0]), rtol=0.02, atol=1.0)


def test_softkiller_hand_checked() -> None:
    img = np.array([[[1.0, 0.5, 2.0, 0.1], [0.2, 0.3, 0.0, 1.5], [3.0, 0.0, 4.0, 0.0], [0.0, 2.6, 0.0, 3.9]]])
    # patch maxima 1, 2, 3, 4 -> cut 2.5: only 3.0, 4.0, 2.6 and 3.9 survive
    out = softkiller(img.astype(np.float32), (2, 2))
    np.testing.assert_array_equal(out[0] > 0, img[0] >= 2.5)
    np.testing.assert_allclose(out[0][img[0] >= 2.5], img[0][img[0] >= 2.5])


def test_true_met_roughly_uniform() -> None:
    met = simulate_events(400, seed=1, eta_bins=16, phi_bins=16, mu=0.0)["met"]
    mag = np.hypot(met[:, 0], met[:, 1])
    assert mag.min() >= 0 and mag.max() <= MET_MAX
    np.testing.assert_allclose(np.percentile(mag, [25, 50, 75]), [25, 50, 75], atol=8.0)
    assert abs(met[:, 0].mean()) < 6 and abs(met[:, 1].mean()) < 6  # isotropic direction


def test_visible_event_balances_invisible() -> None:
    # With the image covering all objects the truth-image MET equals the true MET (up to binning);
    # this fixes the sign convention: met = sum of invisible p_T = -(sum of visible p_T).
    out = simulate_events(100, seed=2, eta_max=6.0, mu=0.0)
    assert rms(met_of_image(out["truth"]) - out["met"]) < 1.0


def test_pileup_grows_with_mu_and_spares_tracks() -> None:
    runs = {mu: simulate_events(30, seed=5, mu=mu) for mu in (0.0, 20.0, 40.0)}
    sum_et = {mu: float(r["images"][..., CL].sum(axis=(1, 2)).mean()) for mu, r in runs.items()}
    d20, d40 = sum_et[20.0] - sum_et[0.0], sum_et[40.0] - sum_et[0.0]
    assert d20 > 100.0
    assert 1.5 * d20 < d40 < 2.5 * d20
    for r in runs.values():  # same hard scatter, no pile-up tracks
        np.testing.assert_array_equal(r["truth"], runs[0.0]["truth"])
        np.testing.assert_array_equal(r["images"][..., TRK], runs[0.0]["images"][..., TRK])


def test_resolution_ordering(mu40: dict[str, np.ndarray]) -> None:
    met = mu40["met"].astype(np.float64)
    imgs = mu40["images"]
    r_truth = rms(met_of_image(mu40["truth"]) - met)
    r_cl = rms(met_of_image(imgs[..., CL]) - met)
    r_sk = rms(met_of_image(imgs[..., SK]) - met)
    assert r_truth < 10.0
    assert r_truth < 0.5 * r_cl
    assert r_sk < 0.9 * r_cl
    trk = met_of_image(imgs[..., TRK])
    assert np.corrcoef(trk.ravel(), met.ravel())[0, 1] > 0.5


def test_pileup_adds_noise_not_bias(mu40: dict[str, np.ndarray]) -> None:
    resid = met_of_image(mu40["images"][..., CL]) - met_of_image(mu40["truth"])
    # isotropic pile-up: the residual averages to ~0 (stat. error ~ 20 / sqrt(300) ~ 1.2 GeV)
    assert np.all(np.abs(resid.mean(axis=0)) < 4.0)
    assert rms(resid) > 10.0
