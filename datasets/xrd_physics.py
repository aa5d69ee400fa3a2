"""Physically grounded simulator of 1D powder X-ray diffraction patterns.

Patterns are generated for the 14 Bravais lattices:

* line positions from Bragg's law ``lambda = 2 d sin(theta)`` with ``d`` from the
  reciprocal metric tensor ``1/d^2 = h^T G* h`` (``G*`` = inverse of the direct
  metric tensor built from ``a, b, c, alpha, beta, gamma``);
* reflections removed by the centring's systematic-extinction rules
  (P, I, F, C and R obverse on hexagonal axes);
* integrated intensities ``m |F|^2 DW(theta) LP(theta)`` where ``m`` is the
  multiplicity obtained by merging all reflections with coincident d-spacing,
  ``|F|^2`` is a random (Wilson / exponential) draw per distinct line,
  ``DW = exp(-2 B sin^2(theta) / lambda^2)`` and
  ``LP = (1 + cos^2 2theta) / (sin^2 theta cos theta)``;
* pseudo-Voigt peak profiles with Caglioti widths
  ``FWHM^2 = U tan^2 theta + V tan theta + W``;
* a smooth random background, Poisson counting noise and a little Gaussian
  read-out noise; each pattern is finally normalised to a maximum of 1.

With the default ``intensities="random"`` ``|F|^2`` is drawn per line, so only the line
positions and their degeneracies carry the lattice information. With
``intensities="structure"`` the intensities come from atoms of a random crystal structure in
a space group of the lattice (:mod:`datasets.xrd_structure`: form factors, Debye-Waller,
extinctions of glides and screws), and the instrument adds a zero shift and a
sample-displacement shift.

Multiplicity convention: :func:`reflection_lines` reports the full
crystallographic multiplicity, i.e. both members of every Friedel pair
``hkl`` / ``-h-k-l`` are counted (cubic F: 111 -> 8, 200 -> 6, 220 -> 12,
311 -> 24, 222 -> 8).  The enumeration itself runs over a half-space and
doubles the merged count.  Merging is purely metric (by d-spacing), so lines
that coincide by accident (e.g. cubic 333 / 511) or that are metrically but
not Laue-symmetry equivalent form one line with one random ``|F|^2``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BRAVAIS_LATTICES",
    "BRAVAIS_TO_SYSTEM",
    "CRYSTAL_SYSTEMS",
    "CU_KA",
    "INTENSITIES",
    "ORIENTATIONS",
    "Cell",
    "PatternGrid",
    "allowed",
    "metric_tensor",
    "reflection_lines",
    "sample_lattice",
    "simulate_pattern",
    "simulate_patterns",
]

Cell = tuple[float, float, float, float, float, float]

CU_KA: float = 1.5406  # Angstrom, Cu K-alpha1

BRAVAIS_LATTICES: tuple[str, ...] = (
    "aP",
    "mP",
    "mC",
    "oP",
    "oC",
    "oI",
    "oF",
    "tP",
    "tI",
    "hR",
    "hP",
    "cP",
    "cI",
    "cF",
)
CRYSTAL_SYSTEMS: tuple[str, ...] = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
)
BRAVAIS_TO_SYSTEM: np.ndarray = np.array(
    [0, 1, 1, 2, 2, 2, 2, 3, 3, 4, 5, 6, 6, 6], dtype=np.int64
)  # aP | mP mC | oP oC oI oF | tP tI | hR (trigonal) | hP (hexagonal) | cP cI cF

# Sampling ranges (Angstrom / degrees).
_LEN_MIN, _LEN_MAX = 3.0, 15.0
_HR_C_MIN, _HR_C_MAX = 5.0, 20.0  # rhombohedral c (hexagonal axes) tends to be long
_REL_DISTINCT = 0.03  # relative separation demanded between "different" lengths
_ANGLE_MARGIN = 3.0  # free angles stay this far from 90 degrees
_MONO_BETA = (90.0 + _ANGLE_MARGIN, 120.0)
_TRI_ANGLE = (65.0, 115.0)

# Profile / noise parameter ranges.
_WINDOW_FWHM = 15.0  # peaks are evaluated within +-15 FWHM
_FWHM_LOW = (0.05, 0.2)  # degrees 2theta, FWHM near 2theta = 0 (sqrt(W))
_FWHM_MAX = 0.4  # degrees 2theta, upper bound of FWHM at two_theta_max
_FWHM_FLOOR = 0.02
_B_RANGE = (0.5, 3.0)  # Debye-Waller B, Angstrom^2
_BG_LEVEL = (0.01, 0.3)  # background maximum relative to the strongest peak
_COUNTS = (3.0e2, 3.0e4)  # counts at the strongest peak (log-uniform)
_READ_NOISE = (0.0, 0.005)  # Gaussian noise sigma relative to the strongest peak
_MERGE_RTOL = 1e-6


@dataclass(frozen=True)
class PatternGrid:
    """Uniform 2theta grid on which patterns are sampled."""

    length: int = 2048  # points per pattern
    two_theta_min: float = 10.0  # degrees
    two_theta_max: float = 80.0
    wavelength: float = CU_KA  # Angstrom, Cu K-alpha

    @property
    def step(self) -> float:
        """Bin width in degrees 2theta."""
        return (self.two_theta_max - self.two_theta_min) / self.length

    def two_theta(self) -> np.ndarray:
        """Bin centres in degrees, shape ``(length,)``."""
        return self.two_theta_min + (np.arange(self.length) + 0.5) * self.step


# --------------------------------------------------------------------------
# Lattice geometry
# --------------------------------------------------------------------------


def metric_tensor(cell: Cell) -> np.ndarray:
    """Direct metric tensor ``G_ij = a_i . a_j`` of ``(a, b, c, alpha, beta, gamma)``."""
    a, b, c, al, be, ga = (float(x) for x in cell)
    ca, cb, cg = np.cos(np.radians([al, be, ga]))
    return np.array(
        [
            [a * a, a * b * cg, a * c * cb],
            [a * b * cg, b * b, b * c * ca],
            [a * c * cb, b * c * ca, c * c],
        ]
    )


def allowed(h: np.ndarray, k: np.ndarray, l: np.ndarray, centring: str) -> np.ndarray:  # noqa: E741
    """Boolean mask of reflections not systematically absent for a lattice centring.

    ``P``: all; ``I``: ``h+k+l`` even; ``F``: ``h, k, l`` unmixed parity;
    ``C``: ``h+k`` even; ``A``: ``k+l`` even; ``B``: ``h+l`` even;
    ``R`` (rhombohedral, hexagonal axes, obverse): ``-h+k+l`` divisible by 3.
    """
    h, k, l = (np.asarray(x, dtype=np.int64) for x in (h, k, l))  # noqa: E741
    h, k, l = np.broadcast_arrays(h, k, l)  # noqa: E741
    if centring == "P":
        return np.ones(h.shape, dtype=bool)
    if centring == "I":
        return (h + k + l) % 2 == 0
    if centring == "F":
        return ((h - k) % 2 == 0) & ((k - l) % 2 == 0)
    if centring == "C":
        return (h + k) % 2 == 0
    if centring == "A":
        return (k + l) % 2 == 0
    if centring == "B":
        return (h + l) % 2 == 0
    if centring == "R":
        return (-h + k + l) % 3 == 0
    raise ValueError(f"unknown centring {centring!r}; expected one of 'PICFRAB'")


def _half_space_hkl(hmax: int, kmax: int, lmax: int) -> np.ndarray:
    """All ``hkl`` in the box with exactly one member of every Friedel pair, (n, 3)."""
    h = np.arange(-hmax, hmax + 1)[:, None, None]
    k = np.arange(-kmax, kmax + 1)[None, :, None]
    l = np.arange(-lmax, lmax + 1)[None, None, :]  # noqa: E741
    keep = (h > 0) | ((h == 0) & ((k > 0) | ((k == 0) & (l > 0))))
    hh, kk, ll = np.nonzero(keep)
    return np.stack([hh - hmax, kk - kmax, ll - lmax], axis=1)


_HKL_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _cached_half_space(hmax: int, kmax: int, lmax: int) -> np.ndarray:
    key = (hmax, kmax, lmax)
    hkl = _HKL_CACHE.get(key)
    if hkl is None:
        hkl = _half_space_hkl(hmax, kmax, lmax)
        if len(_HKL_CACHE) < 4096:
            _HKL_CACHE[key] = hkl
    return hkl


def reflection_lines(
    cell: Cell, centring: str, wavelength: float, two_theta_max: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct allowed powder lines with ``0 < 2theta <= two_theta_max``.

    Returns ``(two_theta_deg, multiplicity, d_spacing)`` sorted by 2theta.
    Reflections whose d-spacings agree to ~1e-6 (relative) are merged into one
    line.  ``multiplicity`` is the full crystallographic multiplicity, counting
    both ``hkl`` and ``-h-k-l`` (cubic 111 -> 8), so it is always even.

    The index search is exact: since ``h = r* . a`` and ``|r*| <= 1/d_min``,
    ``|h| <= a / d_min`` (likewise ``k``, ``l``) with
    ``d_min = wavelength / (2 sin(theta_max))``.
    """
    tt_max = min(float(two_theta_max), 179.999)
    if tt_max <= 0.0:
        empty = np.zeros(0)
        return empty, np.zeros(0, dtype=np.int64), empty
    d_min = wavelength / (2.0 * np.sin(np.radians(tt_max) / 2.0))
    q_max = 1.0 / d_min**2
    g = metric_tensor(cell)
    g_star = np.linalg.inv(g)
    lengths = np.sqrt(np.diag(g))
    hmax, kmax, lmax = (int(np.floor(x / d_min + 1e-9)) for x in lengths)
    hkl = _cached_half_space(hmax, kmax, lmax)
    if len(hkl):
        hkl = hkl[allowed(hkl[:, 0], hkl[:, 1], hkl[:, 2], centring)]
    hkl_f = hkl.astype(np.float64)
    q = np.einsum("ni,ij,nj->n", hkl_f, g_star, hkl_f)  # 1/d^2
    q = q[q <= q_max * (1.0 + 1e-12)]
    if q.size == 0:
        empty = np.zeros(0)
        return empty, np.zeros(0, dtype=np.int64), empty
    q.sort()
    new_line = np.empty(q.size, dtype=bool)
    new_line[0] = True
    new_line[1:] = np.diff(q) > _MERGE_RTOL * q[1:]
    starts = np.flatnonzero(new_line)
    counts = np.diff(np.append(starts, q.size))
    # Representative 1/d^2 of each merged line: the group mean.
    q_line = np.add.reduceat(q, starts) / counts
    d = 1.0 / np.sqrt(q_line)
    sin_t = np.clip(wavelength / (2.0 * d), -1.0, 1.0)
    two_theta = 2.0 * np.degrees(np.arcsin(sin_t))
    keep = two_theta <= tt_max + 1e-9
    return two_theta[keep], 2 * counts[keep].astype(np.int64), d[keep]


# --------------------------------------------------------------------------
# Lattice sampling
# --------------------------------------------------------------------------


def _distinct(*lengths: float) -> bool:
    """True if every pair of lengths differs by more than ``_REL_DISTINCT`` (relative)."""
    for i, x in enumerate(lengths):
        for y in lengths[i + 1 :]:
            if abs(x - y) <= _REL_DISTINCT * max(x, y):
                return False
    return True


def _away(ratio: float, *specials: float) -> bool:
    """True if ``ratio`` is not within ``_REL_DISTINCT`` of any special value."""
    return all(abs(ratio - s) > _REL_DISTINCT * s for s in specials)


def _length(
    rng: np.random.Generator, n: int = 1, lo: float = _LEN_MIN, hi: float = _LEN_MAX
) -> np.ndarray:
    return rng.uniform(lo, hi, size=n)


def sample_lattice(
    bravais: str, rng: np.random.Generator
) -> tuple[float, float, float, float, float, float]:
    """Random conventional cell ``(a, b, c, alpha, beta, gamma)`` (Angstrom, degrees).

    Constraints of each Bravais lattice are respected exactly; free parameters
    are rejection-sampled away from values that would make the lattice
    metrically of higher symmetry (equal lengths within 3 %, free angles within
    3 degrees of 90, and special axial ratios such as ``c/a = sqrt(2)`` for tI,
    ``b/a = sqrt(3)`` for oC, or the hR ratios that give a cubic lattice).
    hR cells are returned on hexagonal axes (obverse setting).
    """
    if bravais not in BRAVAIS_LATTICES:
        raise ValueError(f"unknown Bravais lattice {bravais!r}")
    fam = bravais[0]
    for _ in range(10_000):
        if fam == "c":
            a = float(_length(rng)[0])
            return (a, a, a, 90.0, 90.0, 90.0)
        if fam == "t":
            a, c = (float(x) for x in _length(rng, 2))
            specials = (1.0,) if bravais == "tP" else (1.0, np.sqrt(2.0))
            if _away(c / a, *specials):
                return (a, a, c, 90.0, 90.0, 90.0)
            continue
        if bravais == "hP":
            a, c = (float(x) for x in _length(rng, 2))
            return (a, a, c, 90.0, 90.0, 120.0)
        if bravais == "hR":
            a = float(_length(rng)[0])
            c = float(_length(rng, 1, _HR_C_MIN, _HR_C_MAX)[0])
            # c/a = sqrt(6), sqrt(3/2), sqrt(3/8): rhombohedral angle 60, 90, 109.47 deg
            # (metrically cF, cP, cI).
            if _away(c / a, np.sqrt(6.0), np.sqrt(1.5), np.sqrt(0.375)):
                return (a, a, c, 90.0, 90.0, 120.0)
            continue
        if fam == "o":
            a, b, c = (float(x) for x in _length(rng, 3))
            if not _distinct(a, b, c):
                continue
            if bravais == "oC" and not _away(b / a, np.sqrt(3.0), 1.0 / np.sqrt(3.0)):
                continue
            return (a, b, c, 90.0, 90.0, 90.0)
        if fam == "m":
            a, b, c = (float(x) for x in _length(rng, 3))
            beta = float(rng.uniform(*_MONO_BETA))
            if not _distinct(a, b, c):
                continue
            cb = np.cos(np.radians(beta))
            # a + 2c cos(beta) = 0 (or c + 2a cos(beta) = 0) is metrically oC.
            if abs(a + 2 * c * cb) <= _REL_DISTINCT * a or abs(c + 2 * a * cb) <= _REL_DISTINCT * c:
                continue
            return (a, b, c, 90.0, beta, 90.0)
        if fam == "a":
            a, b, c = (float(x) for x in _length(rng, 3))
            angles = rng.uniform(*_TRI_ANGLE, size=3)
            if not _distinct(a, b, c) or np.any(np.abs(angles - 90.0) <= _ANGLE_MARGIN):
                continue
            ca, cb, cg = np.cos(np.radians(angles))
            if 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg < 0.1:
                continue
            al, be, ga = (float(x) for x in angles)
            return (a, b, c, al, be, ga)
    raise RuntimeError(f"could not sample a valid {bravais} cell")  # pragma: no cover


# --------------------------------------------------------------------------
# Pattern rendering
# --------------------------------------------------------------------------


def _render_peaks(
    grid: PatternGrid,
    tt_grid: np.ndarray,
    pos: np.ndarray,
    fwhm: np.ndarray,
    area: np.ndarray,
    eta: float,
) -> np.ndarray:
    """Sum of area-normalised pseudo-Voigt peaks, each evaluated within +-15 FWHM."""
    n_pts = grid.length
    out = np.zeros(n_pts)
    if pos.size == 0:
        return out
    step = grid.step
    centre = np.rint((pos - grid.two_theta_min) / step - 0.5).astype(np.int64)
    half = np.ceil(_WINDOW_FWHM * fwhm / step).astype(np.int64)
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half, n_pts - 1)
    keep = hi >= lo
    if not np.any(keep):
        return out
    lo, hi, pos, fwhm, area = lo[keep], hi[keep], pos[keep], fwhm[keep], area[keep]
    counts = hi - lo + 1
    line = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    idx = np.arange(line.size) - first[line] + lo[line]
    inv_w = 1.0 / fwhm
    u = (tt_grid[idx] - pos[line]) * inv_w[line]
    u2 = u * u
    gauss_amp = (1.0 - eta) * 2.0 * np.sqrt(np.log(2.0) / np.pi)
    lorentz_amp = eta * 2.0 / np.pi
    prof = lorentz_amp / (1.0 + 4.0 * u2)
    if gauss_amp > 0.0:
        prof += gauss_amp * np.exp(-4.0 * np.log(2.0) * u2)
    prof *= (area * inv_w)[line]
    return np.bincount(idx, weights=prof, minlength=n_pts)


def _background(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth positive background on ``x`` in [0, 1], normalised to max 1."""
    decay = rng.uniform(0.0, 1.0) * np.exp(-x / rng.uniform(0.05, 0.5))
    p1, p2 = rng.uniform(-0.5, 0.5, size=2)
    poly = 1.0 + p1 * (x - 0.5) + p2 * ((x - 0.5) ** 2 - 1.0 / 12.0)
    poly *= rng.uniform(0.1, 1.0)
    hump = rng.uniform(0.0, 0.6) * np.exp(
        -0.5 * ((x - rng.uniform(0.0, 0.5)) / rng.uniform(0.05, 0.2)) ** 2
    )
    bg = np.clip(decay + poly + hump, 0.0, None)
    m = bg.max()
    return bg / m if m > 0 else bg


INTENSITIES = ("random", "structure")
ORIENTATIONS = ("none", "march")
#: low-index texture axes (reciprocal-lattice directions) of ``orientation="march"``
_TEXTURE_AXES = ((0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 1, 0), (1, 1, 1))
_TEXTURE_RATIO = (0.6, 1.0 / 0.6)  # March-Dollase r, log-uniform: plates to needles
_ZERO_SHIFT = 0.05  # degrees 2theta: |zero-point error| of the goniometer, uniform
_DISPLACEMENT = 0.002  # |sample displacement / goniometer radius|, uniform


def simulate_pattern(
    bravais: str,
    rng: np.random.Generator,
    grid: PatternGrid = PatternGrid(),
    cell: Cell | None = None,
    intensities: str = "random",
    crystal: object | None = None,
    orientation: str = "none",
) -> np.ndarray:
    """Simulate one normalised powder pattern, shape ``(grid.length,)`` float32, max 1.

    ``crystal`` (a :class:`datasets.xrd_structure.Crystal`) renders that structure through
    the same random instrument as ``intensities="structure"`` (its cell, its atoms).

    ``cell`` fixes the lattice parameters instead of drawing them with
    :func:`sample_lattice` (the rest of the pattern is still random).
    ``intensities``: ``random`` draws ``|F|^2`` per line (positions and multiplicities carry
    the class); ``structure`` computes them from a random crystal structure on the cell
    (:func:`datasets.xrd_structure.random_crystal`: atoms on positions of a space group of
    the lattice, form factors, Debye-Waller) and adds the instrument's zero shift and the
    sample-displacement shift ``-2 (s/R) cos(theta)``.
    ``orientation="march"`` (structure intensities only) adds March-Dollase preferred
    orientation along a random low-index axis with ``r`` log-uniform in 0.6-1.67.
    """
    if bravais not in BRAVAIS_LATTICES:
        raise ValueError(f"unknown Bravais lattice {bravais!r}")
    if intensities not in INTENSITIES:
        raise ValueError(f"intensities {intensities!r} not in {INTENSITIES}")
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation {orientation!r} not in {ORIENTATIONS}")
    if orientation != "none" and intensities != "structure" and crystal is None:
        raise ValueError("preferred orientation needs intensities='structure'")
    if crystal is not None:
        cell, intensities = crystal.cell, "structure"  # type: ignore[attr-defined]
    if cell is None:
        cell = sample_lattice(bravais, rng)
    centring = bravais[1]
    lam = grid.wavelength
    t_lo, t_hi = grid.two_theta_min, grid.two_theta_max

    # Instrument profile: Caglioti FWHM^2 = U tan^2 + V tan + W (degrees^2).
    w_par = rng.uniform(*_FWHM_LOW) ** 2
    v_par = -rng.uniform(0.0, 0.5) * w_par
    tan_max = np.tan(np.radians(min(t_hi, 179.0) / 2.0))
    u_room = max(_FWHM_MAX**2 - w_par, 0.0) / max(tan_max**2, 1e-12)
    u_par = rng.uniform(0.0, 1.0) * u_room
    eta = float(rng.uniform(0.0, 1.0))

    def caglioti(tt_deg: np.ndarray) -> np.ndarray:
        t = np.tan(np.radians(tt_deg) / 2.0)
        return np.sqrt(np.maximum(u_par * t * t + v_par * t + w_par, _FWHM_FLOOR**2))

    margin = _WINDOW_FWHM * float(caglioti(np.array([min(t_hi + 5.0, 179.0)]))[0])
    if intensities == "structure":
        from datasets.xrd_structure import random_crystal, stick_pattern

        b_iso = float(rng.uniform(*_B_RANGE))
        if crystal is None:
            crystal, _ = random_crystal(bravais, cell, rng, b_iso=b_iso)
        else:  # a given structure gets this pattern's Debye-Waller factor
            from datasets.xrd_structure import Crystal

            crystal = Crystal(crystal.cell, crystal.species, crystal.frac,  # type: ignore
                              crystal.occupancy, np.full(len(crystal.species), b_iso))
        texture = None
        if orientation == "march":
            axis = _TEXTURE_AXES[int(rng.integers(len(_TEXTURE_AXES)))]
            texture = (axis, float(np.exp(rng.uniform(*np.log(_TEXTURE_RATIO)))))
        tt, area = stick_pattern(crystal, lam, min(t_hi + margin, 179.0), texture=texture)
        zero = rng.uniform(-_ZERO_SHIFT, _ZERO_SHIFT)
        displacement = rng.uniform(-_DISPLACEMENT, _DISPLACEMENT)
        tt = tt + zero - np.degrees(2.0 * displacement * np.cos(np.radians(tt) / 2.0))
    else:
        tt, mult, d = reflection_lines(cell, centring, lam, min(t_hi + margin, 179.0))
        # Integrated intensities: m |F|^2 DW LP with random |F|^2 and B.
        f2 = rng.exponential(1.0, size=tt.size)
        b_iso = rng.uniform(*_B_RANGE)
        theta = np.radians(tt) / 2.0
        sin_t, cos_t = np.sin(theta), np.cos(theta)
        lp = (1.0 + np.cos(2.0 * theta) ** 2) / (sin_t**2 * cos_t)
        dw = np.exp(-b_iso / (2.0 * d**2))  # = exp(-2 B sin^2(theta) / lambda^2)
        area = mult * f2 * dw * lp

    fwhm = caglioti(tt)
    near = (tt + _WINDOW_FWHM * fwhm >= t_lo) & (tt - _WINDOW_FWHM * fwhm <= t_hi)
    tt_grid = grid.two_theta()
    signal = _render_peaks(grid, tt_grid, tt[near], fwhm[near], area[near], eta)
    peak_max = signal.max()
    if peak_max > 0:
        signal /= peak_max

    x = (tt_grid - t_lo) / max(t_hi - t_lo, 1e-12)
    level = rng.uniform(*_BG_LEVEL)
    clean = signal + level * _background(x, rng)

    counts = np.exp(rng.uniform(np.log(_COUNTS[0]), np.log(_COUNTS[1])))
    noisy = rng.poisson(clean * counts) / counts
    noisy += rng.normal(0.0, rng.uniform(*_READ_NOISE), size=noisy.size)
    np.clip(noisy, 0.0, None, out=noisy)
    m = noisy.max()
    if m > 0:
        noisy /= m
    return noisy.astype(np.float32)


def simulate_patterns(
    labels: np.ndarray,
    seed: int,
    grid: PatternGrid = PatternGrid(),
    progress: Callable[[int], None] | None = None,
    intensities: str = "random",
    orientation: str = "none",
) -> np.ndarray:
    """Simulate ``len(labels)`` patterns, shape ``(N, grid.length)`` float32
    (``intensities`` and ``orientation`` as in :func:`simulate_pattern`).

    ``labels`` holds Bravais indices into :data:`BRAVAIS_LATTICES` (or the
    symbols themselves).  Pattern ``i`` uses ``np.random.default_rng([seed, i])``
    and is therefore reproducible from ``(seed, i, labels[i])`` alone.
    ``progress(n)`` is called with the number of newly finished patterns
    roughly every 64 patterns (and once for the remainder).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError("labels must be one-dimensional")
    if labels.dtype.kind in "iu":
        if labels.size and (labels.min() < 0 or labels.max() >= len(BRAVAIS_LATTICES)):
            raise ValueError("label index out of range")
        names = [BRAVAIS_LATTICES[int(i)] for i in labels]
    else:
        names = [str(s) for s in labels]
    out = np.empty((len(names), grid.length), dtype=np.float32)
    pending = 0
    for i, name in enumerate(names):
        out[i] = simulate_pattern(name, np.random.default_rng([int(seed), i]), grid,
                                  intensities=intensities, orientation=orientation)
        pending += 1
        if progress is not None and pending >= 64:
            progress(pending)
            pending = 0
    if progress is not None and pending:
        progress(pending)
    return out
