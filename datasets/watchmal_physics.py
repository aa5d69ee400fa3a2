"""Fast Monte-Carlo simulator of water-Cherenkov events in the WatChMaL "image" layout.

Detector: a cylindrical water tank (radius ``R``, half-height ``H``) lined with mPMT modules of 19
PMTs (1 centre, 6 inner ring tilted 30 deg, 12 outer ring tilted 55 deg). Each module is one pixel
of a 40x40 image: the barrel unrolls to rows 12-27 (column = azimuth, row = height, top first), the
top end-cap is pasted as a disc of radius ``40 / 2 pi`` pixels centred in rows 0-11 and the bottom
end-cap likewise in rows 28-39; band pixels outside the discs hold no module and stay 0. Channels
0-18 of a pixel are the PMT charges (photo-electrons), 19-37 their charge-weighted mean hit times
(ns, 0 where a PMT has no charge).

Physics, per event (a photon-by-photon Monte Carlo, vectorised over batches of events):

* vertex uniform in the tank at least ``wall_margin`` from every wall, isotropic direction;
  e and gamma energies uniform in 100-1000 MeV, muon total energies uniform in 250-1000 MeV;
* Cherenkov photons leave their emission point at ``cos(theta_c) = 1 / (n beta)`` around the
  emitting particle's direction, uniformly in azimuth, travel straight to the wall (ray-cylinder
  intersection), survive with probability ``exp(-d / lambda)`` times the module's angular
  acceptance, and land on the pixel containing the hit point;
* muon: one straight track losing 2 MeV/cm, clipped at the wall; ``beta`` and hence ``theta_c``
  fall along the track and the yield per metre follows Frank-Tamm (``sin^2 theta_c``), so the
  ring is filled with a sharp outer edge; emitters are smeared by 0.02 rad of multiple scattering;
* electron: an electromagnetic shower, emission depths drawn from the longitudinal profile
  ``t^(a-1) exp(-b t)`` (``t`` in radiation lengths, ``t_max = ln(E / E_c) - 0.5``), emitters
  smeared by 0.25 rad around the axis (fuzzy ring), light yield proportional to energy;
* gamma: the same shower but only after an exponential conversion length (mean 9/7 X0), split
  into an e+ and an e- shower with a random energy sharing and slightly different axes;
* a photon picks one of the module's 19 PMTs with probability proportional to
  ``max(0, cos)`` of its incidence angle on that PMT; PMT charge = Poisson photo-electron count
  with a Gaussian gain smearing; hit time = travelled distance / c + photon path * n / c + 1 ns
  jitter + a per-event trigger offset; dark-noise hits (single photo-electrons at random times)
  are added at ``dark_rate_khz`` over the read-out window.

Simplifications: no scattering or reflection of light, no wavelength dependence (one ``n`` and
one attenuation length), shower particles all at ``beta = 1`` with no lateral extent, no delta
rays, muon decay or hadronic interactions, energy loss constant at 2 MeV/cm, one time per PMT
(charge-weighted mean) rather than a digitised waveform, and end-cap hits mapped to the nearest
module of the disc when they fall on a pixel whose centre is outside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SHAPE",
    "N_PMT",
    "PMT_AZIMUTH",
    "PMT_TILT",
    "TankGeometry",
    "flip_channel_maps",
    "pixel_centres",
    "pmt_mask",
    "render_events",
    "sample_kinematics",
    "simulate_events",
]

CLASS_NAMES: tuple[str, ...] = ("gamma", "electron", "muon")
GAMMA, ELECTRON, MUON = 0, 1, 2

N_COLS = 40  # modules around the barrel (and image width)
N_ROWS = 40
BARREL_ROWS = 16
CAP_ROWS = 12
N_PMT = 19
IMAGE_SHAPE: tuple[int, int, int] = (N_ROWS, N_COLS, 2 * N_PMT)
_BARREL_FIRST = CAP_ROWS  # rows 12..27
_BOTTOM_FIRST = CAP_ROWS + BARREL_ROWS  # rows 28..39
_CAP_CENTRE_ROW = CAP_ROWS / 2.0  # continuous coordinate inside a band (pixel i spans [i, i+1))
_CAP_CENTRE_COL = N_COLS / 2.0  # = pixel index 19.5 + 0.5
_CAP_RADIUS_PIX = N_COLS / (2.0 * math.pi)

# mPMT layout: tilt of each PMT axis from the module normal and its azimuth in the module's
# tangent plane (barrel: t1 = direction of increasing azimuth, t2 = +z; caps: t1 = +x, t2 = +y).
PMT_TILT: np.ndarray = np.radians(np.r_[0.0, np.full(6, 30.0), np.full(12, 55.0)])
PMT_AZIMUTH: np.ndarray = np.radians(np.r_[0.0, np.arange(6) * 60.0, np.arange(12) * 30.0 + 15.0])
# Rows: components of each PMT axis along (normal, t1, t2).
_PMT_AXES = np.stack(
    [np.cos(PMT_TILT), np.sin(PMT_TILT) * np.cos(PMT_AZIMUTH), np.sin(PMT_TILT) * np.sin(PMT_AZIMUTH)]
)
_PMT_AXES_F32 = _PMT_AXES.astype(np.float32)
_ACCEPT_NORM = float(_PMT_AXES[0].sum())  # summed response at normal incidence (the maximum)

C_LIGHT = 0.299792458  # m / ns
X0 = 0.36  # radiation length of water, m
E_CRIT = 78.0  # critical energy of water, MeV
MUON_MASS = 105.658  # MeV
DEDX = 200.0  # MeV / m (2 MeV/cm)
CONVERSION_LENGTH = 9.0 / 7.0 * X0  # mean gamma conversion length, m
SHOWER_B = 0.5  # longitudinal shower-profile slope parameter
SHOWER_SPREAD = 0.25  # rad, angular spread of shower particles around the axis
MUON_SCATTER = 0.02  # rad, multiple scattering of the muon
GAIN_SMEAR = 0.3  # relative single-photo-electron charge resolution
TRIGGER_OFFSET = 100.0  # ns, nominal time of the interaction in the read-out window
TRIGGER_JITTER = 2.0  # ns, per-event uniform offset
ENERGY_RANGE: dict[int, tuple[float, float]] = {
    GAMMA: (100.0, 1000.0),
    ELECTRON: (100.0, 1000.0),
    MUON: (250.0, 1000.0),  # total energy
}
_BATCH = 16  # events per vectorised batch (and per progress call); small batches stay in cache


@dataclass(frozen=True)
class TankGeometry:
    """Tank and detector response; the image layout (40x40 modules, 19 PMTs) is fixed."""

    radius: float = 4.0  # m
    half_height: float = 8 * 2 * math.pi * 4.0 / N_COLS  # m; barrel = 16 module pitches
    refractive_index: float = 1.33
    attenuation_length: float = 60.0  # m
    pe_per_mev: float = 6.0  # photo-electrons per MeV, head-on light, before attenuation
    dark_rate_khz: float = 1.0  # per PMT
    readout_window_ns: float = 500.0
    time_jitter_ns: float = 1.0
    wall_margin: float = 0.5  # m, minimum vertex distance to the walls

    def __post_init__(self) -> None:
        if self.radius <= 0 or self.half_height <= 0:
            raise ValueError("radius and half_height must be positive")
        if self.refractive_index <= 1.0:
            raise ValueError("refractive_index must exceed 1")
        if self.attenuation_length <= 0 or self.pe_per_mev < 0 or self.dark_rate_khz < 0:
            raise ValueError("attenuation_length must be positive, pe_per_mev and dark_rate_khz >= 0")
        if self.readout_window_ns <= TRIGGER_OFFSET + TRIGGER_JITTER or self.time_jitter_ns < 0:
            raise ValueError("readout_window_ns must exceed the trigger offset, time_jitter_ns >= 0")
        if not 0 <= self.wall_margin < min(self.radius, self.half_height):
            raise ValueError("wall_margin must be non-negative and smaller than the tank")

    @property
    def pitch(self) -> float:
        """Module pitch around the circumference (and on the caps), m."""
        return 2.0 * math.pi * self.radius / N_COLS

    @property
    def row_height(self) -> float:
        """Height of one barrel row, m."""
        return 2.0 * self.half_height / BARREL_ROWS


def _cap_tables() -> tuple[np.ndarray, np.ndarray]:
    """In-disc mask of a 12x40 cap band and, per band pixel, the flat band index of the nearest module."""
    r, c = np.meshgrid(np.arange(CAP_ROWS) + 0.5, np.arange(N_COLS) + 0.5, indexing="ij")
    inside = (r - _CAP_CENTRE_ROW) ** 2 + (c - _CAP_CENTRE_COL) ** 2 <= _CAP_RADIUS_PIX**2
    valid = np.flatnonzero(inside)
    d2 = (r.reshape(-1, 1) - r.flat[valid]) ** 2 + (c.reshape(-1, 1) - c.flat[valid]) ** 2
    nearest = valid[np.argmin(d2, axis=1)]
    return inside, nearest


_CAP_INSIDE, _CAP_NEAREST = _cap_tables()


def pmt_mask() -> np.ndarray:
    """Boolean (40, 40) image of the pixels that hold an mPMT module."""
    mask = np.zeros((N_ROWS, N_COLS), dtype=bool)
    mask[:CAP_ROWS] = _CAP_INSIDE
    mask[_BARREL_FIRST:_BOTTOM_FIRST] = True
    mask[_BOTTOM_FIRST:] = _CAP_INSIDE
    return mask


def _reflected_pmts(axis: int) -> np.ndarray:
    """Index of the PMT whose axis is PMT ``j``'s axis with module-frame component ``axis``
    (1 = t1, 2 = t2) negated: the PMT permutation of a mirror image of the module."""
    mirrored = _PMT_AXES.copy()
    mirrored[axis] *= -1.0
    distance = np.linalg.norm(_PMT_AXES[:, :, None] - mirrored[:, None, :], axis=0)
    index = distance.argmin(axis=0)
    assert np.allclose(distance.min(axis=0), 0.0, atol=1e-9)  # the layout is mirror-symmetric
    return index


def flip_channel_maps() -> dict[str, np.ndarray]:
    """PMT permutations that make image flips physical reflections of the detector.

    Flipping the columns mirrors the tank in y (azimuth → −azimuth), flipping the rows mirrors
    it in z (top cap ↔ bottom cap). Inside a module the PMTs must be mirrored too: on the barrel
    (frame t1 = azimuth, t2 = +z) a column flip negates t1 and a row flip negates t2; on a cap
    (frame t1 = +x, t2 = +y) a column flip negates t2 and a row flip leaves the frame as it is.
    Returns ``{"horizontal": (40, 19), "vertical": (40, 19)}`` gather indices: row ``r`` of the
    flipped image takes its PMT ``k`` from PMT ``map[r, k]`` of the module it came from (the
    convention of WatChMaL's ``horizontal_flip_mpmt_map``, there one map for every row)."""
    identity = np.arange(N_PMT)
    barrel = np.zeros(N_ROWS, dtype=bool)
    barrel[_BARREL_FIRST:_BOTTOM_FIRST] = True
    horizontal = np.where(barrel[:, None], _reflected_pmts(1)[None, :], _reflected_pmts(2)[None, :])
    vertical = np.where(barrel[:, None], _reflected_pmts(2)[None, :], identity[None, :])
    return {"horizontal": horizontal.astype(np.int64), "vertical": vertical.astype(np.int64)}


def pixel_centres(geometry: TankGeometry | None = None) -> np.ndarray:
    """(40, 40, 3) wall position (m) of each module centre; NaN where ``pmt_mask()`` is False."""
    g = geometry or TankGeometry()
    out = np.full((N_ROWS, N_COLS, 3), np.nan)
    cols = np.arange(N_COLS) + 0.5
    phi = cols * 2.0 * math.pi / N_COLS
    z = g.half_height - (np.arange(BARREL_ROWS) + 0.5) * g.row_height
    barrel = out[_BARREL_FIRST:_BOTTOM_FIRST]
    barrel[..., 0] = g.radius * np.cos(phi)[None, :]
    barrel[..., 1] = g.radius * np.sin(phi)[None, :]
    barrel[..., 2] = z[:, None]
    rows = np.arange(CAP_ROWS) + 0.5
    y = np.broadcast_to((_CAP_CENTRE_COL - cols)[None, :] * g.pitch, (CAP_ROWS, N_COLS))
    x_top = np.broadcast_to((_CAP_CENTRE_ROW - rows)[:, None] * g.pitch, (CAP_ROWS, N_COLS))
    for first, x, zc in ((0, x_top, g.half_height), (_BOTTOM_FIRST, -x_top, -g.half_height)):
        band = np.stack([x, y, np.full_like(x, zc)], axis=-1)
        band[~_CAP_INSIDE] = np.nan
        out[first : first + CAP_ROWS] = band
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _smear(axis: np.ndarray, sigma: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Directions deflected from unit ``axis`` (n, 3) by a 2D Gaussian of width ``sigma`` (rad)."""
    sig = np.asarray(sigma, dtype=float).reshape(-1, 1) if np.ndim(sigma) else float(sigma)
    return _unit(axis + sig * rng.standard_normal(axis.shape))


def _perpendicular(w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors orthogonal to unit vectors ``w`` (n, 3), uniform in azimuth around them."""
    v = rng.standard_normal(w.shape)
    v -= np.einsum("ij,ij->i", v, w)[:, None] * w
    return _unit(v)


def _distance_to_wall(
    p: np.ndarray, d: np.ndarray, radius: float, half_height: float
) -> tuple[np.ndarray, np.ndarray]:
    """Path length from points ``p`` inside the tank along unit ``d`` to the wall; and whether it is a cap."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = p[:, 0] * d[:, 0] + p[:, 1] * d[:, 1]
    c = np.minimum(p[:, 0] ** 2 + p[:, 1] ** 2 - radius * radius, 0.0)
    root = np.sqrt(b * b - a * c)
    radial = a > 1e-12
    t_barrel = np.divide(root - b, a, out=np.full_like(a, np.inf), where=radial)
    dz = d[:, 2]
    axial = dz != 0
    t_cap = np.divide(np.copysign(half_height, dz) - p[:, 2], dz, out=np.full_like(a, np.inf), where=axial)
    t_cap = np.maximum(t_cap, 0.0)
    on_cap = t_cap <= t_barrel
    return np.where(on_cap, t_cap, t_barrel), on_cap


def sample_kinematics(
    labels: np.ndarray, rng: np.random.Generator, geometry: TankGeometry | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energies (N,) MeV, vertices (N, 3) m and unit directions (N, 3) for the given labels."""
    g = geometry or TankGeometry()
    labels = _check_labels(labels)
    n = labels.size
    lo = np.array([ENERGY_RANGE[k][0] for k in range(3)])[labels]
    hi = np.array([ENERGY_RANGE[k][1] for k in range(3)])[labels]
    energies = lo + (hi - lo) * rng.random(n)
    r = (g.radius - g.wall_margin) * np.sqrt(rng.random(n))
    phi = 2.0 * math.pi * rng.random(n)
    z = (g.half_height - g.wall_margin) * rng.uniform(-1.0, 1.0, n)
    vertices = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    cos_t = rng.uniform(-1.0, 1.0, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    az = 2.0 * math.pi * rng.random(n)
    directions = np.stack([sin_t * np.cos(az), sin_t * np.sin(az), cos_t], axis=1)
    return energies, vertices, directions


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 2):
        raise ValueError("labels must be integers in {0: gamma, 1: electron, 2: muon}")
    return labels.astype(np.int64)


def _muon_photons(
    ev: np.ndarray,
    energy: np.ndarray,
    vtx: np.ndarray,
    u: np.ndarray,
    g: TankGeometry,
    rng: np.random.Generator,
) -> tuple[np.ndarray, ...]:
    """Emission points, emitter directions, cos(theta_c) and travelled distance of muon photons."""
    n = g.refractive_index
    e_threshold = MUON_MASS * n / math.sqrt(n * n - 1.0)
    s_wall, _ = _distance_to_wall(vtx, u, g.radius, g.half_height)
    length = np.clip(np.minimum((energy - e_threshold) / DEDX, s_wall), 0.0, None)
    sin2_max = 1.0 - 1.0 / (n * n)
    # Poisson process at the beta = 1 rate, thinned by sin^2(theta_c(s)) / sin^2_max (Frank-Tamm).
    counts = rng.poisson(g.pe_per_mev * DEDX * length)
    k = np.repeat(np.arange(ev.size), counts)
    s = rng.random(k.size) * length[k]
    e_s = energy[k] - DEDX * s
    beta = np.sqrt(np.clip(1.0 - (MUON_MASS / e_s) ** 2, 0.0, 1.0))
    cos_c = 1.0 / (n * np.maximum(beta, 1e-9))
    keep = rng.random(k.size) * sin2_max < 1.0 - cos_c**2
    k, s, cos_c = k[keep], s[keep], cos_c[keep]
    points = vtx[k] + s[:, None] * u[k]
    emitters = _smear(u[k], MUON_SCATTER, rng)
    return ev[k], points, emitters, cos_c, s


def _shower_photons(
    ev: np.ndarray,
    energy: np.ndarray,
    vtx: np.ndarray,
    u: np.ndarray,
    is_gamma: np.ndarray,
    g: TankGeometry,
    rng: np.random.Generator,
) -> tuple[np.ndarray, ...]:
    """Emission points, emitter directions, cos(theta_c) and travelled distance of shower photons."""
    m = ev.size
    start = np.where(is_gamma, rng.exponential(CONVERSION_LENGTH, m), 0.0)
    share = np.where(is_gamma, rng.random(m), 1.0)
    # Sub-showers: one per electron, an e+ and an e- per converted gamma.
    sub_parent = np.concatenate([np.arange(m), np.flatnonzero(is_gamma)])
    sub_energy = np.concatenate([energy * share, energy[is_gamma] * (1.0 - share[is_gamma])])
    pair = np.concatenate([is_gamma, np.ones(int(is_gamma.sum()), dtype=bool)])
    open_sigma = np.where(pair, np.minimum(0.3, 13.6 / np.maximum(sub_energy, 1e-3)), 0.0)
    sub_axis = _smear(u[sub_parent], open_sigma, rng)
    t_max = np.maximum(np.log(np.maximum(sub_energy, 1e-3) / E_CRIT) - 0.5, 0.3)
    shape = 1.0 + SHOWER_B * t_max
    counts = rng.poisson(g.pe_per_mev * sub_energy)
    k = np.repeat(np.arange(sub_parent.size), counts)
    depth = X0 * rng.gamma(shape[k], 1.0 / SHOWER_B)
    parent = sub_parent[k]
    points = vtx[parent] + start[parent, None] * u[parent] + depth[:, None] * sub_axis[k]
    emitters = _smear(sub_axis[k], SHOWER_SPREAD, rng)
    cos_c = np.full(k.size, 1.0 / g.refractive_index)
    return ev[parent], points, emitters, cos_c, start[parent] + depth


def _wall_pixel_and_incidence(
    h: np.ndarray, d: np.ndarray, on_cap: np.ndarray, g: TankGeometry
) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel index (row * 40 + col) of wall points ``h`` hit along ``d``; module-frame incidence."""
    top = on_cap & (h[:, 2] > 0)
    bottom = on_cap & ~top
    phi = np.mod(np.arctan2(h[:, 1], h[:, 0]), 2.0 * math.pi)
    col_b = np.minimum((phi * (N_COLS / (2.0 * math.pi))).astype(np.int64), N_COLS - 1)
    row_b = _BARREL_FIRST + np.clip(
        np.floor((g.half_height - h[:, 2]) / g.row_height).astype(np.int64), 0, BARREL_ROWS - 1
    )
    # Caps: top row = 6 - x / pitch, bottom row = 34 + x / pitch, col = 20 - y / pitch (continuous).
    sign = np.where(top, -1.0, 1.0)
    row_c = np.clip(np.floor(_CAP_CENTRE_ROW + sign * h[:, 0] / g.pitch).astype(np.int64), 0, CAP_ROWS - 1)
    col_c = np.clip(np.floor(_CAP_CENTRE_COL - h[:, 1] / g.pitch).astype(np.int64), 0, N_COLS - 1)
    cap_pix = _CAP_NEAREST[row_c * N_COLS + col_c] + np.where(bottom, _BOTTOM_FIRST * N_COLS, 0)
    pixel = np.where(on_cap, cap_pix, row_b * N_COLS + col_b)

    # Incoming direction -d projected on the module frame (inward normal, t1, t2); barrel: normal
    # = -(x, y) / R, t1 = (-y, x) / R, t2 = z; top cap: normal = -z, bottom: +z, t1 = x, t2 = y.
    inv_r = 1.0 / g.radius
    proj = np.empty_like(d)
    proj[:, 0] = np.where(
        on_cap, np.where(top, d[:, 2], -d[:, 2]), (d[:, 0] * h[:, 0] + d[:, 1] * h[:, 1]) * inv_r
    )
    proj[:, 1] = np.where(on_cap, -d[:, 0], (d[:, 0] * h[:, 1] - d[:, 1] * h[:, 0]) * inv_r)
    proj[:, 2] = np.where(on_cap, -d[:, 1], -d[:, 2])
    return pixel, proj


def _choose_pmt(
    proj: np.ndarray, rng: np.random.Generator, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Module acceptance and PMT choice from the incidence ``proj`` (n, 3) in the module frame.

    PMT weights are ``max(0, cos)`` of the incidence angle on each PMT axis; a photon is detected
    with probability (summed weights) / (summed weights at normal incidence) and then lands on a
    PMT drawn in proportion to the weights. Returns the detected mask and their PMT indices.
    """
    accepted = np.empty(len(proj), dtype=bool)
    pmts = []
    for lo in range(0, len(proj), chunk):  # chunks keep the (n, 19) work in cache
        cum = proj[lo : lo + chunk].astype(np.float32) @ _PMT_AXES_F32
        np.maximum(cum, 0.0, out=cum)
        np.cumsum(cum, axis=1, out=cum)
        total = cum[:, -1]
        keep = rng.random(len(cum)) * _ACCEPT_NORM < total
        accepted[lo : lo + chunk] = keep
        cum, total = cum[keep], total[keep]
        pmts.append((cum < (rng.random(len(cum)) * total)[:, None]).sum(axis=1))
    pmt = np.concatenate(pmts) if pmts else np.zeros(0, dtype=np.int64)
    return accepted, np.minimum(pmt, N_PMT - 1)


def _render_batch(
    labels: np.ndarray,
    energies: np.ndarray,
    vertices: np.ndarray,
    directions: np.ndarray,
    g: TankGeometry,
    rng: np.random.Generator,
    out: np.ndarray,
) -> None:
    """Fill ``out`` (B, 40, 40, 38) float32 with the images of one batch of events."""
    b = labels.size
    n_idx = g.refractive_index
    mu = np.flatnonzero(labels == MUON)
    sh = np.flatnonzero(labels != MUON)
    parts = [
        _muon_photons(mu, energies[mu], vertices[mu], directions[mu], g, rng),
        _shower_photons(sh, energies[sh], vertices[sh], directions[sh], labels[sh] == GAMMA, g, rng),
    ]
    ev, points, emitters, cos_c, travelled = (np.concatenate(x) for x in zip(*parts, strict=True))

    # Light emitted outside the water (shower or conversion beyond the wall) is lost.
    inside = (points[:, 0] ** 2 + points[:, 1] ** 2 < g.radius**2) & (np.abs(points[:, 2]) < g.half_height)
    ev, points, emitters, cos_c, travelled = (x[inside] for x in (ev, points, emitters, cos_c, travelled))

    # Cherenkov cone around each emitter, uniform in azimuth.
    sin_c = np.sqrt(1.0 - cos_c**2)
    d = cos_c[:, None] * emitters + sin_c[:, None] * _perpendicular(emitters, rng)

    path, on_cap = _distance_to_wall(points, d, g.radius, g.half_height)
    alive = rng.random(ev.size) < np.exp(-path / g.attenuation_length)
    ev, points, d, path, on_cap, travelled = (x[alive] for x in (ev, points, d, path, on_cap, travelled))
    hit = points + path[:, None] * d
    pixel, proj = _wall_pixel_and_incidence(hit, d, on_cap, g)

    accepted, pmt = _choose_pmt(proj, rng)
    ev, pixel, path, travelled = ev[accepted], pixel[accepted], path[accepted], travelled[accepted]

    t0 = TRIGGER_OFFSET + TRIGGER_JITTER * rng.random(b)
    jitter = g.time_jitter_ns * rng.standard_normal(ev.size)
    times = t0[ev] + travelled / C_LIGHT + path * (n_idx / C_LIGHT) + jitter
    flat = (ev * (N_ROWS * N_COLS) + pixel) * N_PMT + pmt

    # Dark noise: single photo-electrons on random PMTs at random times in the read-out window.
    valid = _VALID_CHANNELS
    n_dark = rng.poisson(valid.size * g.dark_rate_khz * 1e-6 * g.readout_window_ns, b)
    dark_ev = np.repeat(np.arange(b), n_dark)
    dark_flat = dark_ev * (N_ROWS * N_COLS * N_PMT) + valid[rng.integers(0, valid.size, dark_ev.size)]
    flat = np.concatenate([flat, dark_flat])
    times = np.concatenate([times, g.readout_window_ns * (1.0 - rng.random(dark_ev.size))])  # in (0, window]

    size = b * N_ROWS * N_COLS * N_PMT
    npe = np.bincount(flat, minlength=size)
    hit_channels = np.flatnonzero(npe)
    counts = npe[hit_channels].astype(np.float64)
    mean_time = np.bincount(flat, weights=times, minlength=size)[hit_channels] / counts
    charge = counts + GAIN_SMEAR * np.sqrt(counts) * rng.standard_normal(counts.size)
    charge = np.maximum(charge, 0.05)

    out.fill(0.0)
    rows = out.reshape(-1, 2 * N_PMT)  # one row per (event, pixel)
    module, channel = np.divmod(hit_channels, N_PMT)
    rows[module, channel] = charge
    rows[module, channel + N_PMT] = mean_time


_VALID_CHANNELS = (np.flatnonzero(pmt_mask().reshape(-1))[:, None] * N_PMT + np.arange(N_PMT)).reshape(-1)


def render_events(
    labels: np.ndarray,
    energies: np.ndarray,
    vertices: np.ndarray,
    directions: np.ndarray,
    seed: int,
    progress: Callable[[int], None] | None = None,
    geometry: TankGeometry | None = None,
) -> dict[str, np.ndarray]:
    """Simulate events of given kinematics: energies (N,) MeV, vertices (N, 3) m, directions (N, 3).

    Directions are normalised here; output and ``progress`` as in :func:`simulate_events`.
    """
    g = geometry or TankGeometry()
    labels = _check_labels(labels)
    n = labels.size
    energies = np.asarray(energies, dtype=np.float64).reshape(n)
    vertices = np.asarray(vertices, dtype=np.float64).reshape(n, 3)
    directions = _unit(np.asarray(directions, dtype=np.float64).reshape(n, 3))
    if not all(np.isfinite(x).all() for x in (energies, vertices, directions)):
        raise ValueError("energies, vertices and directions must be finite")
    if (energies < 0).any():
        raise ValueError("energies must be non-negative")
    inside = (np.hypot(vertices[:, 0], vertices[:, 1]) < g.radius) & (np.abs(vertices[:, 2]) < g.half_height)
    if not inside.all():
        raise ValueError("all vertices must lie inside the tank")

    event_data = np.empty((n, *IMAGE_SHAPE), dtype=np.float32)
    for batch, lo in enumerate(range(0, n, _BATCH)):
        hi = min(lo + _BATCH, n)
        rng = np.random.default_rng([seed, 1, batch])
        kin = (x[lo:hi] for x in (labels, energies, vertices, directions))
        _render_batch(*kin, g, rng, event_data[lo:hi])
        if progress is not None:
            progress(hi - lo)
    theta = np.arccos(np.clip(directions[:, 2], -1.0, 1.0))
    phi = np.arctan2(directions[:, 1], directions[:, 0])
    return {
        "event_data": event_data,
        "energies": energies.astype(np.float32).reshape(n, 1),
        "positions": vertices.astype(np.float32).reshape(n, 1, 3),
        "angles": np.stack([theta, phi], axis=1).astype(np.float32),
    }


def simulate_events(
    labels: np.ndarray,
    seed: int,
    progress: Callable[[int], None] | None = None,
    geometry: TankGeometry | None = None,
) -> dict[str, np.ndarray]:
    """Simulate one event per label (0 gamma, 1 electron, 2 muon) with random kinematics.

    Returns ``event_data`` float32 (N, 40, 40, 38) (charges in channels 0-18, times in 19-37),
    ``energies`` (N, 1) MeV, ``positions`` (N, 1, 3) m and ``angles`` (N, 2) = (polar angle to the
    tank axis, azimuth) of the direction. ``progress(k)`` is called after every ``k`` finished
    events. Deterministic in ``(labels, seed)``.
    """
    labels = _check_labels(labels)
    energies, vertices, directions = sample_kinematics(labels, np.random.default_rng([seed, 0]), geometry)
    return render_events(labels, energies, vertices, directions, seed, progress, geometry)
