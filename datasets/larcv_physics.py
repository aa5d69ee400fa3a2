"""Fast toy simulator of LArCV-like liquid-argon TPC images (2D wire-plane projections).

Stands in for the LArCV1 images of the "Particle Generator" seed: 512x512 single-plane views cropped
to ``size`` x ``size`` pixels around their charge centroid and kept only if at least 1 % of the crop
is non-zero. Images are mostly zeros with thin tracks and branching electromagnetic showers.

Units: length in pixels (1 px ~ 0.3 cm, roughly a wire pitch); charge in arbitrary ADC-like units
where a minimum-ionising particle (MIP) parallel to the wire plane deposits 1.0 per pixel of path
length (the sum over the pixels across the track). One fixed global scale; no per-image
normalisation. Values are clipped at ``SATURATION``.

Event model, per image (a topology is drawn first, uniformly over :data:`TOPOLOGIES`):

* the vertex is uniform in the central half of a canvas of ``max(128, 4 * size)`` px whose border
  acts as the detector boundary (deposits outside it are dropped);
* **tracks** start at the vertex, are sampled every ``STEP`` px and carry a multiple-scattering
  random walk of the direction with a kink every ``KINK`` px (stronger as a stopping particle slows
  down); every step deposits ``dE/dx * STEP`` times a Landau-like fluctuation (a Moyal draw,
  ``-log(Z^2)``, with a narrow core and a long upper tail); through-going muons are MIPs, stopping
  protons (and some stopping muons) follow the Bragg-Kleeman law ``dE/dx = 17 MeV/cm *
  (R / cm)^-0.42`` in units of a 2.1 MeV/cm MIP (:func:`bragg_dedx`), so they brighten towards a
  Bragg peak at the end; a random 3D dip angle shortens the projected track and raises its charge
  per projected pixel by the same factor. "track" events have 1-3 tracks from the vertex;
* **EM showers** are a generation-by-generation cascade (vectorised over the particles of a
  generation): an electron above the critical energy draws a visible segment, then radiates a
  photon carrying a fraction of its energy and continues deflected; a photon flies invisibly for an
  exponential conversion gap and converts into an e+e- pair with an opening angle ~ 1/E; particles
  below the critical energy end as short faint stubs (range-out electrons, Compton electrons).
  Segments get shorter and fainter as the energy falls, which yields a branching, gappy, fuzzy cone.
  A photon-initiated shower starts a conversion gap away from the vertex;
* **track+shower**: one track and one shower sharing the vertex;
* detector response: bilinear deposition of the step charges onto pixels, Gaussian diffusion
  (sigma uniform in 0.5-0.8 px per image), Gaussian electronic noise (``NOISE_SIGMA``) and zero
  suppression below ``THRESHOLD`` (so the image is exactly zero away from the deposits);
* crop: centred on the charge centroid of the whole event (as in the seed), then re-centred a few
  times on the centroid of the charge inside the crop (a mean-shift), so the crop's own centroid is
  at its centre even when part of the event is cut away; a crop with an occupancy below
  ``min_occupancy`` or a centroid more than 1 px off centre is thrown away and the event is
  regenerated with the same topology (so the topology balance is not biased by the cut).

Simplifications: one 2D view only (no 3D geometry, wire angles or time/wire asymmetry, and showers
are generated directly in the image plane); no recombination (Birks), delta rays, hadronic
interactions, decays (e.g. Michel electrons) or pi0s; lengths of the cascade (radiation length,
conversion gap) are compressed to a few pixels so that a 32 px crop shows recognisable structure;
Landau fluctuations are drawn per 0.5 px step rather than from the full straggling function; noise
is only added where the noiseless signal could survive zero suppression (elsewhere it would need a
5-sigma fluctuation); no dead wires or induction-plane bipolar signals.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = [
    "NOISE_SIGMA",
    "SATURATION",
    "THRESHOLD",
    "TOPOLOGIES",
    "bragg_dedx",
    "render_points",
    "render_track",
    "shower_deposits",
    "simulate_images",
    "track_deposits",
]

TOPOLOGIES: tuple[str, ...] = ("track", "shower", "track+shower")
TRACK, SHOWER, TRACK_SHOWER = 0, 1, 2

STEP = 0.5  # px between deposition points along a path
KINK = 3.0  # px between multiple-scattering kinks of a track
PX_CM = 0.3  # cm per pixel (for the Bragg-Kleeman law)
MIP_MEV_CM = 2.1  # MeV/cm of a MIP in liquid argon
MUON_PROTON_MASS = 105.66 / 938.27
NOISE_SIGMA = 0.02  # electronic noise per pixel (MIP units)
THRESHOLD = 0.1  # zero suppression (5 noise sigma)
SATURATION = 20.0
MIN_SIZE = 16

_MOYAL_MEAN = 0.5772156649 + math.log(2.0)  # mean of -log(chi2_1)
_LANDAU_WIDTH = 0.12  # relative scale of the Moyal fluctuation per step

# EM cascade (energies in units of the critical energy, lengths in px)
_E_CRIT = 1.0
_RAD_LEN = 5.0  # mean visible electron segment before a hard bremsstrahlung at E >> E_crit
_CONV_GAP = 7.0  # mean photon flight before conversion
_STUB_LEN = 4.0  # range (px) of an electron at the critical energy
_MAX_GEN = 12
_MARGIN = 4  # px rendered around a crop so diffusion near its edges is right


def _landau(rng: np.random.Generator, n: int) -> np.ndarray:
    """Multiplicative Landau-like fluctuation with mean 1: ``1 + w (M - <M>)``, M Moyal."""
    z = rng.standard_normal(n)
    moyal = np.clip(-np.log(z * z + 1e-12), -4.0, 12.0)
    return np.maximum(1.0 + _LANDAU_WIDTH * (moyal - _MOYAL_MEAN), 0.2)


def bragg_dedx(residual_range: np.ndarray | float, mass_ratio: float = 1.0) -> np.ndarray:
    """dE/dx (MIP units, >= 1) of a stopping particle at ``residual_range`` px (3D) from its end.

    Bragg-Kleeman for protons, ``17 MeV/cm * R^-0.42``; a lighter particle of mass ``mass_ratio``
    times the proton's has the proton's dE/dx at range ``R / mass_ratio`` (same velocity).
    """
    r_cm = np.maximum(np.asarray(residual_range, dtype=float), 0.25) * PX_CM / mass_ratio
    return np.clip(17.0 / MIP_MEV_CM * r_cm**-0.42, 1.0, 15.0)


def track_deposits(
    rng: np.random.Generator,
    start: tuple[float, float],
    angle: float,
    length: float,
    *,
    stopping: bool,
    mass_ratio: float = 1.0,
    projection: float = 1.0,
    ms_sigma: float = 0.02,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Charge deposits ``(x, y, q)`` of one track of projected ``length`` px from ``start``.

    ``angle`` is the initial direction in the image plane (rad, x = column, y = row);
    ``projection`` (0, 1] is the cosine of the dip angle out of the plane, so the 3D path is
    ``length / projection`` and the charge per projected pixel is ``dE/dx / projection``. Stopping
    tracks follow :func:`bragg_dedx`, others are MIPs. ``ms_sigma`` is the kink r.m.s. (rad) of a
    fast particle; for a stopping one it grows as the residual range shrinks.
    """
    n = max(1, int(math.ceil(length / STEP)))
    per_kink = int(round(KINK / STEP))
    n_kink = -(-n // per_kink)
    if stopping:
        r_kink = (length - (np.arange(n_kink) + 0.5) * KINK) / projection
        sigma = np.minimum(ms_sigma * (40.0 * mass_ratio / (np.maximum(r_kink, 0.0) + 4.0)) ** 0.6, 0.3)
    else:
        sigma = np.full(n_kink, ms_sigma)
    kinks = rng.standard_normal(n_kink) * sigma
    kinks[0] = 0.0
    ang = np.repeat(angle + np.cumsum(kinks), per_kink)[:n]
    dx, dy = STEP * np.cos(ang), STEP * np.sin(ang)
    x = start[0] + np.cumsum(dx) - 0.5 * dx
    y = start[1] + np.cumsum(dy) - 0.5 * dy
    if stopping:
        residual = (length - (np.arange(n) + 0.5) * STEP) / projection
        dedx = bragg_dedx(residual, mass_ratio)
    else:
        dedx = 1.0
    q = dedx * (STEP / projection) * _landau(rng, n)
    return x, y, q


def _segmented_cumsum(v: np.ndarray, first: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``v`` restarted at every segment start ``first`` (segments of ``counts``)."""
    c = np.cumsum(v)
    return c - np.repeat(c[first] - v[first], counts)


def shower_deposits(
    rng: np.random.Generator,
    start: tuple[float, float],
    angle: float,
    energy: float,
    *,
    photon: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Charge deposits ``(x, y, q)`` of an EM cascade of ``energy`` (critical-energy units).

    A photon primary first flies an exponential conversion gap (nothing deposited).
    """
    px = np.array([start[0]], dtype=float)
    py = np.array([start[1]], dtype=float)
    phi = np.array([angle], dtype=float)
    e = np.array([energy], dtype=float)
    is_photon = np.array([photon])
    out_x: list[np.ndarray] = []
    out_y: list[np.ndarray] = []
    out_q: list[np.ndarray] = []
    for _ in range(_MAX_GEN):
        if e.size == 0:
            break
        m = e.size
        u = rng.random((6, m))
        g = rng.standard_normal((2, m))
        scale = np.maximum(e / _E_CRIT, 1e-3)
        el = ~is_photon
        hot = el & (scale > 1.0)
        cold = el & ~hot
        # photons: an invisible straight gap (soft, Compton-ish photons fly farther)
        gap = _CONV_GAP * -np.log(u[1] + 1e-12) * np.where(scale < 2.0, 1.5, 1.0)
        ex = px + gap * np.cos(phi)
        ey = py + gap * np.sin(phi)
        end_phi = phi.copy()
        # electrons: a visible, multiply-scattered segment; range-out stubs scatter hard first
        ie = np.flatnonzero(el)
        if ie.size:
            se = scale[ie]
            length = np.where(
                hot[ie],
                _RAD_LEN * (0.3 + 0.7 * np.minimum(se, 8.0) ** 0.35) * -np.log(u[0, ie] * 0.9 + 0.05),
                _STUB_LEN * np.minimum(se, 1.0) * (0.3 + 0.7 * u[0, ie]),
            )
            rho = np.clip(0.55 * se**0.3, 0.35, 1.0)
            counts = np.maximum(np.ceil(length / STEP).astype(np.int64), 1)
            step = length / counts
            first = np.cumsum(counts) - counts
            last = first + counts - 1
            seg = np.repeat(np.arange(ie.size), counts)
            kick = np.minimum(0.12 / np.sqrt(se), 0.5)
            dphi = rng.standard_normal(seg.size) * kick[seg]
            dphi[first] = np.where(cold[ie], 0.6 * g[0, ie], 0.0)
            ang = phi[ie][seg] + _segmented_cumsum(dphi, first, counts)
            dx = step[seg] * np.cos(ang)
            dy = step[seg] * np.sin(ang)
            cx = _segmented_cumsum(dx, first, counts)
            cy = _segmented_cumsum(dy, first, counts)
            out_x.append(px[ie][seg] + cx - 0.5 * dx)
            out_y.append(py[ie][seg] + cy - 0.5 * dy)
            out_q.append((rho * step)[seg] * _landau(rng, seg.size))
            ex[ie] = px[ie] + cx[last]
            ey[ie] = py[ie] + cy[last]
            end_phi[ie] = ang[last]
        # daughters: hot electron -> electron (1 - z) E + photon z E; photon -> e+e- pair with
        # an opening angle ~ 1/sqrt(E), a soft photon -> one Compton electron (or escapes)
        z = 0.1 + 0.5 * u[2]
        theta_e = 0.35 * g[1] / np.sqrt(scale)
        pair = is_photon & (scale > 2.0)
        compton = is_photon & ~pair & (u[3] < 0.7)
        split = 0.15 + 0.7 * u[4]
        opening = np.minimum(0.6 / np.sqrt(scale), 1.2) * (0.5 + u[5])
        n_hot = int(hot.sum())
        px = np.concatenate((ex[hot], ex[hot], ex[pair], ex[pair], ex[compton]))
        py = np.concatenate((ey[hot], ey[hot], ey[pair], ey[pair], ey[compton]))
        phi = np.concatenate((
            (end_phi + theta_e)[hot],
            (end_phi - 0.3 * theta_e)[hot],
            (phi + split * opening)[pair],
            (phi - (1.0 - split) * opening)[pair],
            (phi + 1.2 * g[1])[compton],
        ))
        e = np.concatenate((
            ((1.0 - z) * e)[hot],
            (z * e)[hot],
            ((1.0 - split) * e)[pair],
            (split * e)[pair],
            (e * (0.3 + 0.6 * u[2]))[compton],
        ))
        is_photon = np.zeros(e.size, bool)
        is_photon[n_hot:2 * n_hot] = True
    if not out_x:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return np.concatenate(out_x), np.concatenate(out_y), np.concatenate(out_q)


def render_points(
    x: np.ndarray, y: np.ndarray, q: np.ndarray, shape: tuple[int, int], sigma: float
) -> np.ndarray:
    """Bilinear deposition of charges at continuous ``(x, y)`` (pixel ``i`` spans ``[i, i+1)``)
    onto a ``shape`` grid, then Gaussian diffusion of ``sigma`` px (no noise, no threshold)."""
    h, w = shape
    fx, fy = x - 0.5, y - 0.5
    ix, iy = np.floor(fx), np.floor(fy)
    tx, ty = fx - ix, fy - iy
    ix = ix.astype(np.int64) + 1  # grid padded by one pixel on each side
    iy = iy.astype(np.int64) + 1
    keep = (ix >= 0) & (ix <= w) & (iy >= 0) & (iy <= h)
    ix, iy, tx, ty, q = ix[keep], iy[keep], tx[keep], ty[keep], q[keep]
    wp = w + 2
    base = iy * wp + ix
    idx = np.concatenate((base, base + 1, base + wp, base + wp + 1))
    wts = np.concatenate(((1 - tx) * (1 - ty) * q, tx * (1 - ty) * q, (1 - tx) * ty * q, tx * ty * q))
    grid = np.bincount(idx, wts, minlength=(h + 2) * wp).reshape(h + 2, wp)[1:-1, 1:-1]
    if sigma > 0:
        grid = gaussian_filter(grid, sigma, mode="constant", truncate=3.0)
    return grid


def render_track(
    size: int,
    start: tuple[float, float],
    angle: float,
    length: float,
    *,
    stopping: bool,
    seed: int = 0,
    mass_ratio: float = 1.0,
    sigma: float = 0.65,
    ms_sigma: float = 0.0,
) -> np.ndarray:
    """A single track drawn on a ``size`` x ``size`` grid (diffused, no noise): a test helper.

    Defaults: proton-mass Bragg curve when ``stopping``, no multiple scattering.
    """
    rng = np.random.default_rng(seed)
    x, y, q = track_deposits(rng, start, angle, length, stopping=stopping, mass_ratio=mass_ratio,
                             ms_sigma=ms_sigma)
    return render_points(x, y, q, (size, size), sigma).astype(np.float32)


def _random_track(rng: np.random.Generator, vertex: tuple[float, float], primary: bool,
                  canvas: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A muon (through-going or stopping) or a stopping proton from ``vertex``."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    projection = max(math.sqrt(1.0 - rng.uniform(-1.0, 1.0) ** 2), 0.25)
    kind = rng.random()
    if primary and kind < 0.45:  # through-going muon
        length3 = rng.uniform(0.5, 1.5) * canvas
        return track_deposits(rng, vertex, angle, length3 * projection, stopping=False,
                              projection=projection, ms_sigma=0.02)
    if primary and kind < 0.65:  # stopping muon
        length3 = rng.uniform(25.0, 120.0)
        return track_deposits(rng, vertex, angle, length3 * projection, stopping=True,
                              mass_ratio=MUON_PROTON_MASS, projection=projection, ms_sigma=0.03)
    length3 = rng.uniform(10.0, 60.0) if primary else rng.uniform(4.0, 40.0)
    return track_deposits(rng, vertex, angle, length3 * projection, stopping=True,
                          projection=projection, ms_sigma=0.015)


def _random_shower(rng: np.random.Generator, vertex: tuple[float, float]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An electron- or photon-initiated cascade of log-uniform energy from ``vertex``."""
    energy = math.exp(rng.uniform(math.log(6.0), math.log(60.0)))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    return shower_deposits(rng, vertex, angle, energy, photon=bool(rng.random() < 0.5))


def _event(rng: np.random.Generator, topology: int, canvas: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deposits of one event of ``topology`` on the canvas (clipped to it)."""
    vertex = (float(rng.uniform(0.25, 0.75) * canvas), float(rng.uniform(0.25, 0.75) * canvas))
    parts = []
    if topology == TRACK:
        n_tracks = 1 + int(rng.choice(3, p=(0.55, 0.3, 0.15)))
        parts = [_random_track(rng, vertex, i == 0, canvas) for i in range(n_tracks)]
    elif topology == SHOWER:
        parts = [_random_shower(rng, vertex)]
    else:
        parts = [_random_track(rng, vertex, True, canvas), _random_shower(rng, vertex)]
    x, y, q = (np.concatenate(a) for a in zip(*parts, strict=True))
    inside = (x >= 0) & (x < canvas) & (y >= 0) & (y < canvas)
    return x[inside], y[inside], q[inside]


def _centre(x: np.ndarray, y: np.ndarray, q: np.ndarray, size: int) -> tuple[float, float] | None:
    """Charge centroid of the event, refined to the centroid of the charge inside the crop."""
    total = q.sum()
    if total <= 0:
        return None
    cx, cy = float(x @ q / total), float(y @ q / total)
    half = 0.5 * size
    for _ in range(8):
        inside = (np.abs(x - cx) < half) & (np.abs(y - cy) < half)
        w = q[inside]
        tw = w.sum()
        if tw <= 0:
            return None
        nx, ny = float(x[inside] @ w / tw), float(y[inside] @ w / tw)
        shift = abs(nx - cx) + abs(ny - cy)
        cx, cy = nx, ny
        if shift < 0.02:
            break
    return cx, cy


def _crop(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, q: np.ndarray, size: int,
          centre: tuple[float, float]) -> np.ndarray:
    """Detector response on the ``size`` crop whose centre is ``centre``."""
    offx = centre[0] - 0.5 * size - _MARGIN
    offy = centre[1] - 0.5 * size - _MARGIN
    full = size + 2 * _MARGIN
    sel = (x > offx - 1) & (x < offx + full + 1) & (y > offy - 1) & (y < offy + full + 1)
    grid = render_points(x[sel] - offx, y[sel] - offy, q[sel], (full, full), rng.uniform(0.5, 0.8))
    img = grid[_MARGIN:-_MARGIN, _MARGIN:-_MARGIN]
    live = img > 0.25 * THRESHOLD
    img = np.where(live, img + NOISE_SIGMA * rng.standard_normal(img.shape), 0.0)
    img[img < THRESHOLD] = 0.0
    return np.minimum(img, SATURATION)


def _centroid_offset(img: np.ndarray) -> float:
    """Distance (px) of the charge centroid of ``img`` from its centre."""
    total = img.sum()
    c = 0.5 * (img.shape[0] - 1)
    idx = np.arange(img.shape[0])
    return math.hypot(float(img.sum(0) @ idx / total) - c, float(img.sum(1) @ idx / total) - c)


def simulate_images(
    n: int,
    size: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
    min_occupancy: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, size, size) float32 >= 0 and their topology labels (n,) int64.

    Labels index :data:`TOPOLOGIES`. Deterministic for the same ``(n, size, seed)``; every image
    has at least ``min_occupancy`` of its pixels non-zero and its charge centroid within 1 px of
    the centre. ``progress(k)`` is called with the number ``k`` of newly finished images (every 64
    and at the end).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not 0.0 <= min_occupancy < 0.5:
        raise ValueError(f"min_occupancy must be in [0, 0.5), got {min_occupancy!r}")
    size, n = int(size), int(n)
    canvas = max(128, 4 * size)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(TOPOLOGIES), size=n).astype(np.int64)
    images = np.zeros((n, size, size), np.float32)
    need = min_occupancy * size * size
    pending = 0
    for i in range(n):
        for _attempt in range(1000):
            x, y, q = _event(rng, int(labels[i]), canvas)
            centre = _centre(x, y, q, size)
            if centre is None:
                continue
            img = _crop(rng, x, y, q, size, centre)
            nonzero = np.count_nonzero(img)
            if nonzero == 0 or nonzero < need or _centroid_offset(img) > 1.0:
                continue
            images[i] = img
            break
        else:
            raise RuntimeError(f"no event passed min_occupancy={min_occupancy} in 1000 attempts")
        pending += 1
        if progress is not None and pending >= 64:
            progress(pending)
            pending = 0
    if progress is not None and pending:
        progress(pending)
    return images, labels
