"""Powder-diffraction intensities of a crystal structure: atoms on a lattice, not random lines.

For every reflection ``hkl`` with ``2theta`` in range (``s = sin(theta)/lambda = 1/(2d)``):

* structure factor ``F(hkl) = sum_j o_j f_j(s) exp(-B_j s^2) exp(2 pi i hkl . x_j)`` over the
  atoms ``j`` of the conventional cell (fractional position ``x_j``, occupancy ``o_j``,
  isotropic Debye-Waller ``B_j`` in Angstrom^2);
* atomic form factor ``f(s) = Z - 41.78214 s^2 sum_i a_i exp(-b_i s^2)`` (the Mott-Bethe
  form of the electron-density fit, with the coefficients pymatgen tabulates for every
  element); no anomalous dispersion, so Friedel's law holds and one half-space is computed;
* Lorentz-polarisation ``LP = (1 + cos^2 2theta) / (sin^2 theta cos theta)``;
* line intensity ``sum_{hkl on the line} |F|^2 LP``: summing every member of the line gives
  the multiplicity without a table, and systematic extinctions (centring, glides, screws)
  come out of ``F`` itself.

The calculation is this project's own, vectorised over reflections and atoms; it is checked
against pymatgen's ``XRDCalculator`` on the real structures of
:mod:`datasets.xrd_reference` (tests/test_xrd_structure.py). pymatgen builds the full cell from
a space group and its asymmetric unit (:func:`expand`) and spglib names the Bravais lattice
(:func:`bravais_lattice`): the two jobs where a well-kept library of the field does better
than hand-written code.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from datasets.xrd_lattice import CU_KA, Cell, _cached_half_space, metric_tensor

__all__ = ["Crystal", "Site", "bravais_lattice", "expand", "form_factors", "lattice_matrix",
           "march_dollase", "stick_pattern"]

#: one atom site of an asymmetric unit: (element, (x, y, z) fractional)
Site = tuple[str, tuple[float, float, float]]
_MERGE_DEG = 1e-5  # reflections closer than this in 2theta form one line (as pymatgen does)


@dataclass(frozen=True)
class Crystal:
    """A crystal structure: the conventional cell and every atom in it."""

    cell: Cell  # a, b, c (Angstrom), alpha, beta, gamma (degrees)
    species: tuple[str, ...]  # element symbol of each atom
    frac: np.ndarray  # (n, 3) fractional coordinates
    occupancy: np.ndarray | None = None  # (n,), default 1
    b_iso: np.ndarray | None = None  # (n,) Debye-Waller B in Angstrom^2, default 0

    def __post_init__(self) -> None:
        frac = np.asarray(self.frac, dtype=np.float64).reshape(-1, 3)
        if len(frac) != len(self.species):
            raise ValueError(f"{len(self.species)} species for {len(frac)} positions")
        object.__setattr__(self, "frac", frac)


def lattice_matrix(cell: Cell) -> np.ndarray:
    """Rows a, b, c in Cartesian Angstrom (a along x, b in the xy plane)."""
    a, b, c, al, be, ga = (float(x) for x in cell)
    ca, cb, cg = np.cos(np.radians([al, be, ga]))
    sg = np.sin(np.radians(ga))
    cx = c * cb
    cy = c * (ca - cb * cg) / sg
    cz = np.sqrt(max(c * c - cx * cx - cy * cy, 0.0))
    return np.array([[a, 0.0, 0.0], [b * cg, b * sg, 0.0], [cx, cy, cz]])


@functools.cache
def _scattering_table() -> dict[str, tuple[int, np.ndarray]]:
    """Element -> (Z, (4, 2) form-factor coefficients a_i, b_i) from pymatgen's data file."""
    from pymatgen.core.periodic_table import Element

    text = resources.files("pymatgen.analysis.diffraction").joinpath(
        "atomic_scattering_params.json").read_text()
    return {el: (Element(el).Z, np.asarray(coeff, dtype=np.float64))
            for el, coeff in json.loads(text).items()}


def form_factors(elements: Sequence[str], s2: np.ndarray) -> np.ndarray:
    """``f(s)`` of each element at ``s^2 = (sin(theta)/lambda)^2``: shape (len(elements), len(s2))."""
    table = _scattering_table()
    out = np.empty((len(elements), len(s2)))
    for i, element in enumerate(elements):
        if element not in table:
            raise ValueError(f"no X-ray form factor for element {element!r}")
        z, coeff = table[element]
        out[i] = z - 41.78214 * s2 * (coeff[:, 0] * np.exp(-np.outer(s2, coeff[:, 1]))).sum(1)
    return out


def march_dollase(hkl: np.ndarray, g_star: np.ndarray, axis: Sequence[float],
                  ratio: float) -> np.ndarray:
    """March-Dollase preferred-orientation factor of each reflection, shape ``(len(hkl),)``:
    ``P = (r^2 cos^2 a + sin^2 a / r)^(-3/2)`` with ``a`` the angle between the reflection's
    scattering vector and the texture axis ``axis`` (a reciprocal-lattice direction, e.g.
    (0, 0, 1) for plates lying on (001)). ``r < 1``: plates, ``r > 1``: needles, ``r = 1``:
    none. ``P`` averages to 1 over all directions, so the total intensity is kept."""
    axis = np.asarray(axis, dtype=np.float64)
    dots = hkl @ g_star @ axis
    norms = np.sqrt(np.einsum("ni,ij,nj->n", hkl, g_star, hkl) * (axis @ g_star @ axis))
    cos2 = np.clip((dots / np.where(norms > 0, norms, 1.0)) ** 2, 0.0, 1.0)
    return (ratio**2 * cos2 + (1.0 - cos2) / ratio) ** -1.5


def stick_pattern(crystal: Crystal, wavelength: float = CU_KA, two_theta_max: float = 80.0,
                  two_theta_min: float = 0.0,
                  texture: tuple[Sequence[float], float] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Powder lines of ``crystal``: ``(two_theta_deg, integrated_intensity)`` sorted by angle
    (absolute units, electrons^2 times LP; lines whose intensity is 0 by symmetry are dropped).

    ``texture = (axis, r)`` applies March-Dollase preferred orientation (:func:`march_dollase`)
    to every reflection before the members of a line are summed, so a line averages the factor
    over its symmetry-equivalent reflections."""
    tt_max = min(float(two_theta_max), 179.999)
    d_min = wavelength / (2.0 * np.sin(np.radians(tt_max) / 2.0))
    g_star = np.linalg.inv(metric_tensor(crystal.cell))
    lengths = np.sqrt(np.diag(metric_tensor(crystal.cell)))
    hkl = _cached_half_space(*(int(np.floor(x / d_min + 1e-9)) for x in lengths))
    q = np.einsum("ni,ij,nj->n", hkl, g_star, hkl)  # 1/d^2
    sin_t = wavelength * np.sqrt(q) / 2.0
    keep = (sin_t <= np.sin(np.radians(tt_max) / 2.0) + 1e-12) & (q > 0)
    hkl, q, sin_t = hkl[keep], q[keep], sin_t[keep]
    two_theta = 2.0 * np.degrees(np.arcsin(np.clip(sin_t, 0.0, 1.0)))
    keep = two_theta >= two_theta_min
    hkl, q, sin_t, two_theta = hkl[keep], q[keep], sin_t[keep], two_theta[keep]
    if not len(hkl):
        return np.zeros(0), np.zeros(0)
    s2 = q / 4.0
    elements = sorted(set(crystal.species))
    f = form_factors(elements, s2)  # (n_elements, n_hkl)
    index = {e: i for i, e in enumerate(elements)}
    n = len(crystal.species)
    occupancy = np.ones(n) if crystal.occupancy is None else np.asarray(crystal.occupancy, float)
    b_iso = np.zeros(n) if crystal.b_iso is None else np.asarray(crystal.b_iso, float)
    structure_factor = np.zeros(len(hkl), dtype=np.complex128)
    step = max(1, 2_000_000 // max(n, 1))  # bounded (hkl chunk x atoms) phase matrix
    for start in range(0, len(hkl), step):
        rows = slice(start, start + step)
        phase = np.exp(2j * np.pi * (hkl[rows] @ crystal.frac.T))  # (chunk, n)
        weight = (f[[index[s] for s in crystal.species]][:, rows].T  # (chunk, n)
                  * occupancy * np.exp(-np.outer(s2[rows], b_iso)))
        structure_factor[rows] = (phase * weight).sum(1)
    theta = np.radians(two_theta / 2.0)
    lp = (1.0 + np.cos(2.0 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))
    intensity = 2.0 * np.abs(structure_factor) ** 2 * lp  # x2: the Friedel mates
    if texture is not None:
        intensity *= march_dollase(hkl, g_star, texture[0], float(texture[1]))
    order = np.argsort(two_theta, kind="stable")
    two_theta, intensity = two_theta[order], intensity[order]
    key = np.round(two_theta / _MERGE_DEG).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, np.diff(key) != 0])
    lines = np.add.reduceat(intensity, starts)
    positions = np.add.reduceat(two_theta * intensity, starts) / np.where(lines > 0, lines, 1)
    positions = np.where(lines > 0, positions, two_theta[starts])
    strong = lines > lines.max() * 1e-9 if len(lines) else lines.astype(bool)
    return positions[strong], lines[strong]


def expand(space_group: int, cell: Cell, sites: Sequence[Site]) -> Crystal:
    """The full conventional cell of ``space_group`` (its standard setting in pymatgen: origin
    choice 1, hexagonal axes for R groups) from the asymmetric unit ``sites``."""
    from pymatgen.core import Lattice, Structure

    lattice = Lattice.from_parameters(*cell)
    structure = Structure.from_spacegroup(space_group, lattice, [s for s, _ in sites],
                                          [list(x) for _, x in sites], tol=1e-3)
    return Crystal(cell=tuple(float(x) for x in cell),  # type: ignore[arg-type]
                   species=tuple(site.specie.symbol for site in structure),
                   frac=np.asarray(structure.frac_coords) % 1.0)


#: (crystal system, first letter of the space-group symbol) -> Bravais lattice
_CENTRING = {"cubic": {"P": "cP", "I": "cI", "F": "cF"},
             "tetragonal": {"P": "tP", "I": "tI"},
             "orthorhombic": {"P": "oP", "I": "oI", "F": "oF", "C": "oC", "A": "oC", "B": "oC"},
             "hexagonal": {"P": "hP"}, "trigonal": {"P": "hP", "R": "hR"},
             "monoclinic": {"P": "mP", "C": "mC", "A": "mC", "I": "mC", "B": "mC"},
             "triclinic": {"P": "aP"}}


def bravais_lattice(crystal: Crystal, symprec: float = 1e-3) -> tuple[str, int]:
    """(Bravais lattice, space-group number) of ``crystal`` as spglib finds them."""
    import spglib

    numbers = {e: i + 1 for i, e in enumerate(sorted(set(crystal.species)))}
    cell = (lattice_matrix(crystal.cell), crystal.frac, [numbers[s] for s in crystal.species])
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if dataset is None:
        raise ValueError("spglib found no symmetry (overlapping atoms?)")
    number = int(dataset.number)
    system = _crystal_system(number)
    return _CENTRING[system][dataset.international[0]], number


def _crystal_system(number: int) -> str:
    for last, name in ((2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"),
                       (142, "tetragonal"), (167, "trigonal"), (194, "hexagonal"),
                       (230, "cubic")):
        if number <= last:
            return name
    raise ValueError(f"space group {number} out of 1..230")


# --------------------------------------------------------------------------
# Random structures for the synthetic generator
# --------------------------------------------------------------------------

#: elements atoms are drawn from: common in inorganic crystals, light to heavy scatterers
ELEMENTS: tuple[str, ...] = (
    "O", "O", "O", "Si", "Al", "Fe", "Ca", "Na", "Mg", "K", "Ti", "Mn", "Cu", "Zn", "Ni", "Co",
    "Cr", "S", "Cl", "F", "N", "C", "Li", "Ba", "Sr", "Zr", "Sn", "Pb", "W", "Mo", "Ag", "La",
    "Ce", "Bi", "Se", "Te", "As", "Ga", "Ge", "In", "Y", "V", "P", "B", "Cs", "Nb", "Ta", "Pt")
#: fractional values a coordinate is snapped to (special positions of many groups)
_SPECIAL = np.array([0.0, 0.5, 0.25, 0.75, 1 / 3, 2 / 3, 0.125, 0.375, 1 / 6])
MAX_ATOMS = 64  # atoms in the conventional cell of a random structure
MIN_DISTANCE = 1.2  # Angstrom between any two atoms of a random structure


@functools.cache
def space_group_settings() -> dict[str, tuple[int, ...]]:
    """Bravais lattice -> spglib Hall numbers of the standard setting of every space group on
    that lattice (origin choice 1, hexagonal axes for R, unique axis b for monoclinic)."""
    import spglib

    first: dict[int, int] = {}
    for hall in range(1, 531):
        number = int(spglib.get_spacegroup_type(hall).number)
        first.setdefault(number, hall)
    out: dict[str, list[int]] = {}
    for number, hall in sorted(first.items()):
        letter = spglib.get_spacegroup_type(hall).international_short[0]
        out.setdefault(_CENTRING[_crystal_system(number)][letter], []).append(hall)
    return {k: tuple(v) for k, v in out.items()}


@functools.cache
def _operations(hall: int) -> tuple[np.ndarray, np.ndarray]:
    import spglib

    ops = spglib.get_symmetry_from_database(hall)
    return np.asarray(ops["rotations"], dtype=np.float64), np.asarray(ops["translations"])


def _orbit(hall: int, position: np.ndarray) -> np.ndarray:
    """Distinct images of one fractional position under the group's operations, (m, 3)."""
    rotations, translations = _operations(hall)
    images = (np.einsum("oij,j->oi", rotations, position) + translations) % 1.0
    keys = np.round(images * 1e4).astype(np.int64) % 10_000
    _, first = np.unique(keys, axis=0, return_index=True)
    return images[np.sort(first)]


def _min_distance(cell: Cell, frac: np.ndarray) -> float:
    """Shortest distance between two atoms (nearest periodic image over the 27 neighbours)."""
    if len(frac) < 2:
        return float("inf")
    matrix = lattice_matrix(cell)
    diff = frac[:, None, :] - frac[None, :, :]
    diff -= np.round(diff)
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    cart = (diff[:, :, None, :] + shifts[None, None]) @ matrix  # (n, n, 27, 3)
    dist = np.linalg.norm(cart, axis=-1).min(-1)
    np.fill_diagonal(dist, np.inf)
    return float(dist.min())


def random_crystal(bravais: str, cell: Cell, rng: np.random.Generator,
                   b_iso: float = 0.0) -> tuple[Crystal, int]:
    """A random structure on ``cell`` in a random space group of lattice ``bravais``: 1-4
    atom sites of random elements, each coordinate snapped to a special value with
    probability 1/2 (so atoms also sit on special positions), expanded by the group's
    operations; at most :data:`MAX_ATOMS` atoms, none closer than :data:`MIN_DISTANCE`, and
    spglib must find the lattice ``bravais`` in it (decorations that add symmetry are drawn
    again). Returns ``(crystal, Hall number of the space group it was built in)``."""
    halls = space_group_settings()[bravais]
    hall = int(rng.choice(halls))
    for _ in range(200):
        n_sites = int(rng.integers(1, 5))
        species: list[str] = []
        positions: list[np.ndarray] = []
        for element in rng.choice(ELEMENTS, n_sites):
            point = rng.random(3)
            snap = rng.random(3) < 0.5
            point[snap] = rng.choice(_SPECIAL, int(snap.sum()))
            orbit = _orbit(hall, point)
            species += [str(element)] * len(orbit)
            positions.append(orbit)
        frac = np.concatenate(positions)
        if len(frac) <= MAX_ATOMS and _min_distance(cell, frac) >= MIN_DISTANCE:
            crystal = Crystal(cell, tuple(species), frac, b_iso=np.full(len(frac), b_iso))
            # a decoration can add symmetry (e.g. a translation by a/2 makes an F cell
            # primitive cubic of half the edge): keep only what spglib labels as intended
            if bravais_lattice(crystal)[0] == bravais:
                return crystal, hall
        hall = int(rng.choice(halls))
    # fallback that always fits: one atom at the origin (the lattice's own points)
    frac = _orbit(hall, np.zeros(3))
    return Crystal(cell, ("Cu",) * len(frac), frac, b_iso=np.full(len(frac), b_iso)), hall
