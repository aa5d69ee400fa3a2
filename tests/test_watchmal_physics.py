"""Tests for the water-Cherenkov event simulator in ``datasets/watchmal_physics.py``."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from datasets.watchmal_physics import (  # noqa: E402
    CLASS_NAMES,
    IMAGE_SHAPE,
    PMT_AZIMUTH,
    TankGeometry,
    _wall_pixel_and_incidence,
    pixel_centres,
    pmt_mask,
    render_events,
    sample_kinematics,
    simulate_events,
)

C_LIGHT = 0.299792458  # m/ns
GAMMA, ELECTRON, MUON = 0, 1, 2


def charge(out: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 40, 40) summed module charge."""
    return out["event_data"][..., :19].sum(-1)


def unit_directions(angles: np.ndarray) -> np.ndarray:
    theta, phi = angles[:, 0].astype(float), angles[:, 1].astype(float)
    return np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)


@pytest.fixture(scope="module")
def mixed() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    labels = np.tile([GAMMA, ELECTRON, MUON], 40)
    return labels, simulate_events(labels, seed=7)


# --------------------------------------------------------------------------
# Geometry and layout
# --------------------------------------------------------------------------


def test_constants_and_geometry_defaults():
    assert CLASS_NAMES == ("gamma", "electron", "muon")
    assert IMAGE_SHAPE == (40, 40, 38)
    g = TankGeometry()
    assert g.radius == 4.0
    assert g.half_height == pytest.approx(8 * 2 * math.pi * 4.0 / 40)
    assert g.pitch == pytest.approx(2 * math.pi * 4.0 / 40)
    assert 2 * g.half_height == pytest.approx(16 * g.pitch)  # barrel = 16 pitches
    assert g.refractive_index == 1.33
    assert 30.0 <= g.attenuation_length <= 100.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.radius = 5.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        TankGeometry(refractive_index=0.9)
    with pytest.raises(ValueError):
        TankGeometry(wall_margin=10.0)


def test_pmt_mask_layout():
    mask = pmt_mask()
    assert mask.shape == (40, 40) and mask.dtype == bool
    assert mask[12:28].all()  # barrel
    rows, cols = np.meshgrid(np.arange(12), np.arange(40), indexing="ij")
    disc = (rows - 5.5) ** 2 + (cols - 19.5) ** 2 <= (40 / (2 * math.pi)) ** 2
    assert np.array_equal(mask[:12], disc)
    assert np.array_equal(mask[28:], disc)
    assert not mask[0, 0] and not mask[11, 39] and not mask[39, 0] and not mask[0, 13]
    assert mask[5, 19] and mask[34, 20] and mask[0, 18]
    assert 110 <= disc.sum() <= 135  # ~ pi * 6.37^2


def test_pixel_centres_on_wall_and_inverse_of_hit_mapping():
    g = TankGeometry()
    mask = pmt_mask()
    centres = pixel_centres(g)
    assert np.isnan(centres[~mask]).all() and np.isfinite(centres[mask]).all()
    barrel = centres[12:28].reshape(-1, 3)
    assert np.allclose(np.hypot(barrel[:, 0], barrel[:, 1]), g.radius)
    assert np.all(np.abs(barrel[:, 2]) < g.half_height)
    assert np.all(np.diff(centres[12:28, 0, 2]) < 0)  # row 12 is the top of the barrel
    caps = np.concatenate([centres[:12][mask[:12]], centres[28:][mask[28:]]])
    assert np.allclose(np.abs(caps[:, 2]), g.half_height)
    assert np.all(np.hypot(caps[:, 0], caps[:, 1]) <= g.radius + 1e-9)
    assert np.all(centres[:12][mask[:12]][:, 2] > 0)
    # Neighbouring barrel modules are one pitch apart.
    step = np.linalg.norm(centres[20, 1] - centres[20, 0])
    assert step == pytest.approx(2 * g.radius * math.sin(math.pi / 40))

    # The simulator's hit -> pixel mapping sends every module centre to its own pixel.
    flat = np.flatnonzero(mask.reshape(-1))
    points = centres.reshape(-1, 3)[flat]
    on_cap = np.abs(np.abs(points[:, 2]) - g.half_height) < 1e-9
    outward = np.where(on_cap[:, None], [0.0, 0.0, 1.0] * np.sign(points[:, 2:3]), points * [1, 1, 0])
    outward /= np.linalg.norm(outward, axis=1, keepdims=True)
    pixel, proj = _wall_pixel_and_incidence(points, outward, on_cap, g)
    assert np.array_equal(pixel, flat)
    assert np.allclose(proj, [1.0, 0.0, 0.0])  # head-on along the module normal


# --------------------------------------------------------------------------
# Output format and invariants
# --------------------------------------------------------------------------


def test_output_shapes_dtypes_finite(mixed):
    labels, out = mixed
    n = labels.size
    assert set(out) == {"event_data", "energies", "positions", "angles"}
    assert out["event_data"].shape == (n, 40, 40, 38)
    assert out["energies"].shape == (n, 1)
    assert out["positions"].shape == (n, 1, 3)
    assert out["angles"].shape == (n, 2)
    for key, arr in out.items():
        assert arr.dtype == np.float32, key
        assert np.isfinite(arr).all(), key
    q = out["event_data"][..., :19]
    assert (q >= 0).all()
    assert (q.sum(axis=(1, 2, 3)) > 0).all()  # at least dark noise everywhere


def test_time_channels_zero_exactly_where_charge_is_zero(mixed):
    _, out = mixed
    q = out["event_data"][..., :19]
    t = out["event_data"][..., 19:]
    assert np.array_equal(q == 0, t == 0)
    assert (t[q > 0] > 0).all() and (t <= TankGeometry().readout_window_ns).all()


def test_end_cap_pixels_outside_disc_stay_zero(mixed):
    _, out = mixed
    mask = pmt_mask()
    assert not out["event_data"][:, ~mask, :].any()
    # Light aimed at the rim of the caps, where hits fall on partly covered pixels.
    n = 8
    az = np.linspace(0, 2 * math.pi, n, endpoint=False)
    vertices = np.stack([3.0 * np.cos(az), 3.0 * np.sin(az), np.where(np.arange(n) % 2, 4.0, -4.0)], 1)
    directions = np.stack([np.cos(az), np.sin(az), np.where(np.arange(n) % 2, 1.0, -1.0)], 1)
    rim = render_events(np.full(n, ELECTRON), np.full(n, 800.0), vertices, directions, seed=3)
    assert not rim["event_data"][:, ~mask, :].any()
    caps = np.r_[0:12, 28:40]
    assert charge(rim)[:, caps].sum() > 0.3 * charge(rim).sum()


def test_kinematics_ranges():
    g = TankGeometry()
    labels = np.repeat([GAMMA, ELECTRON, MUON], 1000)
    energies, vertices, directions = sample_kinematics(labels, np.random.default_rng(0), g)
    assert np.hypot(vertices[:, 0], vertices[:, 1]).max() <= g.radius - g.wall_margin
    assert np.abs(vertices[:, 2]).max() <= g.half_height - g.wall_margin
    assert np.allclose(np.linalg.norm(directions, axis=1), 1.0)
    assert abs(directions[:, 2].mean()) < 0.06 and abs(directions[:, 0].mean()) < 0.06  # isotropic
    for k, (lo, hi) in ((GAMMA, (100, 1000)), (ELECTRON, (100, 1000)), (MUON, (250, 1000))):
        e = energies[labels == k]
        assert e.min() >= lo and e.max() <= hi and e.max() - e.min() > 0.8 * (hi - lo)
    # Output angles describe the directions.
    out = render_events(labels[:5], energies[:5], vertices[:5], directions[:5], seed=0)
    assert np.allclose(unit_directions(out["angles"]), directions[:5], atol=1e-5)
    assert np.allclose(out["positions"][:, 0], vertices[:5], atol=1e-5)
    assert np.allclose(out["energies"][:, 0], energies[:5], rtol=1e-6)


def test_deterministic_in_labels_and_seed():
    labels = np.tile([GAMMA, ELECTRON, MUON], 25)  # spans several batches
    a = simulate_events(labels, seed=11)
    b = simulate_events(labels, seed=11)
    c = simulate_events(labels, seed=12)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert not np.array_equal(a["event_data"], c["event_data"])
    assert not np.array_equal(a["positions"], c["positions"])


def test_progress_and_empty_input():
    calls: list[int] = []
    simulate_events(np.full(150, ELECTRON), seed=1, progress=calls.append)
    assert sum(calls) == 150 and max(calls) <= 64 and len(calls) >= 3
    empty = simulate_events(np.zeros(0, dtype=int), seed=1)
    assert empty["event_data"].shape == (0, 40, 40, 38) and empty["angles"].shape == (0, 2)


def test_invalid_input_rejected():
    for labels in (np.array([0, 3]), np.array([-1]), np.array([0.0, 1.0]), np.zeros((2, 2), dtype=int)):
        with pytest.raises(ValueError):
            simulate_events(labels, seed=0)
    with pytest.raises(ValueError):
        render_events([MUON], [500.0], [[0.0, 0.0, 9.0]], [[0.0, 0.0, 1.0]], seed=0)  # outside the tank
    with pytest.raises(ValueError):
        render_events([ELECTRON], [-5.0], [[0.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]], seed=0)


# --------------------------------------------------------------------------
# Physics
# --------------------------------------------------------------------------


def test_total_charge_grows_with_energy():
    for label in (ELECTRON, MUON):
        out = simulate_events(np.full(192, label), seed=21 + label)
        q = charge(out).sum(axis=(1, 2))
        assert np.corrcoef(out["energies"][:, 0], q)[0, 1] > 0.5, CLASS_NAMES[label]
    # Muon light follows the track length above threshold; none below threshold.
    muons = render_events(
        np.full(3, MUON), [150.0, 300.0, 1000.0], np.zeros((3, 3)), np.tile([1.0, 0, 0], (3, 1)), seed=2
    )
    q = charge(muons).sum(axis=(1, 2))
    assert q[0] < 60 and q[2] > 4 * q[1] > 4 * q[0]


def test_charge_lands_where_the_particle_points():
    vertices = [[0, 0, 1.0], [0, 0, -1.0], [0, 0, 0], [0, 0, 0]]
    directions = [[0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0], [0, 1.0, 0]]
    q = charge(render_events(np.full(4, MUON), np.full(4, 800.0), vertices, directions, seed=3))
    total = q.sum(axis=(1, 2))
    assert q[0, :12].sum() > 0.9 * total[0]  # up -> top cap
    assert q[1, 28:].sum() > 0.9 * total[1]  # down -> bottom cap
    col_phi = (np.arange(40) + 0.5) * 2 * math.pi / 40
    for i, phi in ((2, 0.0), (3, math.pi / 2)):
        barrel = q[i, 12:28]
        assert barrel.sum() > 0.9 * total[i]
        mean_phi = np.angle((barrel.sum(0) * np.exp(1j * col_phi)).sum())
        assert abs(np.angle(np.exp(1j * (mean_phi - phi)))) < math.radians(8)
        mean_row = (barrel.sum(1) * np.arange(12, 28)).sum() / barrel.sum()
        assert abs(mean_row - 19.5) < 1.0  # z = 0 is between rows 19 and 20


def test_pmt_channels_follow_incidence_direction():
    # A muon going up from the axis lights the top cap from the inside of its ring: on pixels with x > 0
    # the light travels towards +x, so PMTs tilted back towards -x (cos azimuth < 0) face it.
    out = render_events([MUON], [800.0], [[0, 0, 1.0]], [[0, 0, 1.0]], seed=5)
    centres = pixel_centres()
    sel = pmt_mask() & (np.nan_to_num(centres[..., 0]) > 0.5) & (np.arange(40)[:, None] < 12)
    per_pmt = out["event_data"][0][sel][:, :19].sum(0)
    facing = np.cos(PMT_AZIMUTH) < -1e-9
    away = np.cos(PMT_AZIMUTH) > 1e-9
    outer = np.arange(19) >= 7
    assert per_pmt[outer & facing].sum() > 2.0 * per_pmt[outer & away].sum()
    assert per_pmt[0] > 0 and per_pmt[1:7].sum() > 0


def test_hit_times_follow_light_paths():
    g = TankGeometry(dark_rate_khz=0.0)
    centres = pixel_centres(g)
    for label in (ELECTRON, MUON):
        vertex = np.array([-1.0, 0.5, 0.3])
        out = render_events([label], [600.0], [vertex], [[1.0, 0.2, 0.0]], seed=4, geometry=g)
        q = out["event_data"][0, ..., :19]
        t = out["event_data"][0, ..., 19:]
        qp = q.sum(-1)
        lit = qp > 3
        tp = (q * t).sum(-1)[lit] / qp[lit]
        dist = np.linalg.norm(centres[lit] - vertex, axis=1)
        # Cherenkov geometry: emission along the track plus the photon path ~ straight path at c / n.
        resid = tp - (101.0 + dist * g.refractive_index / C_LIGHT)
        assert abs(np.median(resid)) < 2.0
        assert np.percentile(np.abs(resid), 95) < 5.0
        assert np.corrcoef(dist, tp)[0, 1] > 0.8


def test_ring_size_and_charge_depend_on_wall_distance():
    n = 6
    vertices = np.r_[np.tile([-3.0, 0, 0], (n, 1)), np.tile([2.5, 0, 0], (n, 1))]  # 7 m / 1.5 m to wall
    directions = np.tile([1.0, 0, 0], (2 * n, 1))
    for label, energy in ((ELECTRON, 500.0), (MUON, 700.0)):
        labels, energies = np.full(2 * n, label), np.full(2 * n, energy)
        q = charge(render_events(labels, energies, vertices, directions, seed=1))
        hit = (q > 1).sum(axis=(1, 2))
        assert hit[:n].mean() > 3 * hit[n:].mean(), CLASS_NAMES[label]
        # With a short attenuation length the far wall receives much less light.
        short = TankGeometry(attenuation_length=3.0)
        q_short = charge(render_events(labels, energies, vertices, directions, seed=1, geometry=short))
        far, near = q_short[:n].sum(), q_short[n:].sum()
        assert far < 0.5 * near and far < 0.3 * q[:n].sum()


def test_dark_noise_only_without_light():
    g = TankGeometry(pe_per_mev=0.0)
    out = simulate_events(np.tile([GAMMA, ELECTRON, MUON], 22), seed=9, geometry=g)
    q = out["event_data"][..., :19]
    n_hits = (q > 0).sum(axis=(1, 2, 3))
    expected = pmt_mask().sum() * 19 * g.dark_rate_khz * 1e-6 * g.readout_window_ns
    assert 0.7 * expected < n_hits.mean() < 1.3 * expected
    assert q.max() < 4.0  # single photo-electrons


# --------------------------------------------------------------------------
# Separability: mu vs e easy, e vs gamma hard
# --------------------------------------------------------------------------


def ring_features(out: dict[str, np.ndarray]) -> np.ndarray:
    """Hand features, using the true vertex and direction as a vertex fitter would provide them.

    Charge-weighted spread of the angle between the particle direction and the vertex -> module
    line, fraction of charge outside the Cherenkov cone, mean angle, log total charge, log hit count.
    """
    mask = pmt_mask()
    centres = pixel_centres()[mask]
    q = charge(out)[:, mask].astype(float)
    vertex = out["positions"][:, 0].astype(float)
    u = unit_directions(out["angles"])
    rel = centres[None] - vertex[:, None]
    cos = np.einsum("npk,nk->np", rel, u) / np.linalg.norm(rel, axis=-1)
    ang = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    total = q.sum(1)
    w = q / total[:, None]
    mean = (w * ang).sum(1)
    spread = np.sqrt((w * (ang - mean[:, None]) ** 2).sum(1))
    outside = (w * (ang > 50.0)).sum(1)
    n_hit = (q > 0.5).sum(1)
    return np.stack([spread, outside, mean, np.log(total), np.log1p(n_hit)], axis=1)


def logistic_accuracy(xa: np.ndarray, xb: np.ndarray) -> float:
    """Held-out accuracy of a numpy logistic regression trained on half of the events."""
    x = np.concatenate([xa, xb])
    y = np.r_[np.zeros(len(xa)), np.ones(len(xb))]
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    half = len(y) // 2
    x = (x - x[:half].mean(0)) / (x[:half].std(0) + 1e-9)
    x = np.c_[x, np.ones(len(x))]
    w = np.zeros(x.shape[1])
    for _ in range(2000):
        p = 1.0 / (1.0 + np.exp(-x[:half] @ w))
        w -= 0.5 * x[:half].T @ (p - y[:half]) / half
    return float(((x[half:] @ w > 0) == y[half:]).mean())


def test_muon_separable_electron_gamma_hard():
    feats = {k: ring_features(simulate_events(np.full(300, k), seed=100 + k)) for k in range(3)}
    mu_e = logistic_accuracy(feats[MUON], feats[ELECTRON])
    e_gamma = logistic_accuracy(feats[ELECTRON], feats[GAMMA])
    print(f"held-out accuracy: mu vs e {mu_e:.3f}, e vs gamma {e_gamma:.3f}")
    assert mu_e >= 0.85
    assert e_gamma <= 0.75
    # Muon rings are sharp: much less light outside the Cherenkov cone than from showers.
    assert np.median(feats[MUON][:, 1]) < 0.5 * np.median(feats[ELECTRON][:, 1])
    # Electrons and gammas of the same energies give similar light.
    ratio = np.median(np.exp(feats[GAMMA][:, 3])) / np.median(np.exp(feats[ELECTRON][:, 3]))
    assert 0.8 < ratio < 1.2
