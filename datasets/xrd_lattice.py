"""Lattice geometry of powder diffraction: the 14 Bravais lattices and their crystal systems,
random cells respecting each lattice's constraints, the reciprocal metric tensor, the
centrings' extinction rules and the reflection lines (2θ, multiplicity, d) of a cell.
:mod:`datasets.xrd_physics` renders patterns from them (its docstring has the physics)."""


from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
