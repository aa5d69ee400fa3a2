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
from functools import partial

import numpy as np

from datasets.base import generate_in_chunks
from datasets.xrd_lattice import (
    _B_RANGE,
    _BG_LEVEL,
    _COUNTS,
    _FWHM_FLOOR,
    _FWHM_LOW,
    _FWHM_MAX,
    _READ_NOISE,
    _WINDOW_FWHM,
    BRAVAIS_LATTICES,
    BRAVAIS_TO_SYSTEM,
    CRYSTAL_SYSTEMS,
    CU_KA,
    Cell,
    PatternGrid,
    allowed,
    metric_tensor,
    reflection_lines,
    sample_lattice,
)
from datasets.xrd_structure import Crystal, random_crystal, stick_pattern

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
    grid: PatternGrid = PatternGrid(),  # noqa: B008 (frozen)
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
        b_iso = float(rng.uniform(*_B_RANGE))
        if crystal is None:
            crystal, _ = random_crystal(bravais, cell, rng, b_iso=b_iso)
        else:  # a given structure gets this pattern's Debye-Waller factor
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
    grid: PatternGrid = PatternGrid(),  # noqa: B008 (frozen)
    progress: Callable[[int], None] | None = None,
    intensities: str = "random",
    orientation: str = "none",
    workers: int | None = None,
) -> np.ndarray:
    """Simulate ``len(labels)`` patterns, shape ``(N, grid.length)`` float32
    (``intensities`` and ``orientation`` as in :func:`simulate_pattern`).

    ``labels`` holds Bravais indices into :data:`BRAVAIS_LATTICES` (or the
    symbols themselves).  Pattern ``i`` uses ``np.random.default_rng([seed, i])``
    and is therefore reproducible from ``(seed, i, labels[i])`` alone.
    ``progress(n)`` is called with the number of newly finished patterns
    every 64 patterns (and once for the remainder). Chunks of 64 are spread over
    ``workers`` processes (default: :func:`datasets.base.data_workers`); the patterns do not
    depend on how many.
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
    if not names:
        return np.empty((0, grid.length), dtype=np.float32)
    simulate = partial(_simulate_range, int(seed), grid, intensities, orientation)
    return generate_in_chunks(simulate, len(names), chunk=64, per_row=names,
                              progress=progress, workers=workers)


def _simulate_range(seed: int, grid: PatternGrid, intensities: str, orientation: str,
                    start: int, stop: int, names: list[str]) -> np.ndarray:
    """Patterns ``start..stop-1`` of :func:`simulate_patterns` (``names`` are theirs; pattern
    ``i`` from ``default_rng([seed, i])``)."""
    out = np.empty((stop - start, grid.length), dtype=np.float32)
    for row, i in enumerate(range(start, stop)):
        out[row] = simulate_pattern(names[row], np.random.default_rng([seed, i]), grid,
                                    intensities=intensities, orientation=orientation)
    return out
