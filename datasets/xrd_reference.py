"""Real crystal structures for checking the XRD physics and scoring sim -> real transfer.

Each entry: a published cell and the asymmetric unit of the structure in its space group's
standard setting (origin choice 1; hexagonal axes for R groups), as tabulated in the
crystallographic literature (Wyckoff, *Crystal Structures*; the American Mineralogist
Crystal Structure Database; the AFLOW Library of Crystallographic Prototypes), rounded to the
digits given. Elements, simple compounds and common minerals; every one of the 7 crystal
systems and 14 Bravais lattices. The Bravais label is never written here: spglib derives it
from the expanded structure (:func:`datasets.xrd_structure.bravais_lattice`), and the tests
check that spglib finds the space group each entry declares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.xrd_physics import BRAVAIS_LATTICES, PatternGrid, simulate_pattern
from datasets.xrd_structure import Crystal, Site, expand


@dataclass(frozen=True)
class ReferenceStructure:
    name: str
    formula: str
    space_group: int
    cell: tuple[float, float, float, float, float, float]
    sites: tuple[Site, ...]

    def crystal(self) -> Crystal:
        return expand(self.space_group, self.cell, self.sites)


def _cubic(a: float) -> tuple[float, float, float, float, float, float]:
    return (a, a, a, 90.0, 90.0, 90.0)


def _tetragonal(a: float, c: float) -> tuple[float, float, float, float, float, float]:
    return (a, a, c, 90.0, 90.0, 90.0)


def _hexagonal(a: float, c: float) -> tuple[float, float, float, float, float, float]:
    return (a, a, c, 90.0, 90.0, 120.0)


def _ortho(a: float, b: float, c: float) -> tuple[float, float, float, float, float, float]:
    return (a, b, c, 90.0, 90.0, 90.0)


def _mono(a: float, b: float, c: float, beta: float
          ) -> tuple[float, float, float, float, float, float]:
    return (a, b, c, 90.0, beta, 90.0)


T, TT = 1 / 3, 2 / 3
REFERENCE_STRUCTURES: tuple[ReferenceStructure, ...] = (
    # cubic P
    ReferenceStructure("caesium chloride", "CsCl", 221, _cubic(4.123),
                       (("Cs", (0, 0, 0)), ("Cl", (0.5, 0.5, 0.5)))),
    ReferenceStructure("strontium titanate (perovskite)", "SrTiO3", 221, _cubic(3.905),
                       (("Sr", (0, 0, 0)), ("Ti", (0.5, 0.5, 0.5)), ("O", (0.5, 0.5, 0)))),
    ReferenceStructure("Cu3Au (L1_2)", "Cu3Au", 221, _cubic(3.749),
                       (("Au", (0, 0, 0)), ("Cu", (0, 0.5, 0.5)))),
    ReferenceStructure("alpha-polonium", "Po", 221, _cubic(3.359), (("Po", (0, 0, 0)),)),
    # cubic I
    ReferenceStructure("alpha-iron", "Fe", 229, _cubic(2.8665), (("Fe", (0, 0, 0)),)),
    ReferenceStructure("tungsten", "W", 229, _cubic(3.1652), (("W", (0, 0, 0)),)),
    ReferenceStructure("niobium", "Nb", 229, _cubic(3.3004), (("Nb", (0, 0, 0)),)),
    # cubic F
    ReferenceStructure("copper", "Cu", 225, _cubic(3.6149), (("Cu", (0, 0, 0)),)),
    ReferenceStructure("aluminium", "Al", 225, _cubic(4.0495), (("Al", (0, 0, 0)),)),
    ReferenceStructure("halite", "NaCl", 225, _cubic(5.6402),
                       (("Na", (0, 0, 0)), ("Cl", (0.5, 0.5, 0.5)))),
    ReferenceStructure("periclase", "MgO", 225, _cubic(4.2117),
                       (("Mg", (0, 0, 0)), ("O", (0.5, 0.5, 0.5)))),
    ReferenceStructure("fluorite", "CaF2", 225, _cubic(5.4630),
                       (("Ca", (0, 0, 0)), ("F", (0.25, 0.25, 0.25)))),
    ReferenceStructure("silicon (diamond)", "Si", 227, _cubic(5.4310), (("Si", (0, 0, 0)),)),
    ReferenceStructure("gallium arsenide (sphalerite)", "GaAs", 216, _cubic(5.6533),
                       (("Ga", (0, 0, 0)), ("As", (0.25, 0.25, 0.25)))),
    ReferenceStructure("sphalerite", "ZnS", 216, _cubic(5.4093),
                       (("Zn", (0, 0, 0)), ("S", (0.25, 0.25, 0.25)))),
    # tetragonal P
    ReferenceStructure("rutile", "TiO2", 136, _tetragonal(4.5937, 2.9587),
                       (("Ti", (0, 0, 0)), ("O", (0.30478, 0.30478, 0)))),
    ReferenceStructure("cassiterite", "SnO2", 136, _tetragonal(4.7374, 3.1864),
                       (("Sn", (0, 0, 0)), ("O", (0.3056, 0.3056, 0)))),
    # tetragonal I
    ReferenceStructure("indium", "In", 139, _tetragonal(3.2523, 4.9461), (("In", (0, 0, 0)),)),
    ReferenceStructure("BaFe2As2 (ThCr2Si2 type)", "BaFe2As2", 139,
                       _tetragonal(3.9625, 13.0168),
                       (("Ba", (0, 0, 0)), ("Fe", (0, 0.5, 0.25)), ("As", (0, 0, 0.3545)))),
    ReferenceStructure("anatase", "TiO2", 141, _tetragonal(3.7845, 9.5143),
                       (("Ti", (0, 0, 0)), ("O", (0, 0, 0.2081)))),
    ReferenceStructure("beta-tin", "Sn", 141, _tetragonal(5.8318, 3.1819), (("Sn", (0, 0, 0)),)),
    # orthorhombic P
    ReferenceStructure("marcasite", "FeS2", 58, _ortho(4.443, 5.424, 3.387),
                       (("Fe", (0, 0, 0)), ("S", (0.2005, 0.3783, 0)))),
    ReferenceStructure("herzenbergite", "SnS", 62, _ortho(11.18, 3.98, 4.33),
                       (("Sn", (0.1184, 0.25, 0.1197)), ("S", (0.8514, 0.25, 0.4793)))),
    ReferenceStructure("alpha-PbO2 (scrutinyite)", "PbO2", 60, _ortho(4.977, 5.949, 5.444),
                       (("Pb", (0, 0.178, 0.25)), ("O", (0.276, 0.401, 0.424)))),
    # orthorhombic I
    ReferenceStructure("Sr2CuO3", "Sr2CuO3", 71, _ortho(12.68, 3.91, 3.50),
                       (("Sr", (0.3546, 0, 0)), ("Cu", (0, 0, 0)), ("O", (0.1573, 0, 0)),
                        ("O", (0, 0.5, 0)))),
    ReferenceStructure("CeCu2 (KHg2 type)", "CeCu2", 74, _ortho(4.43, 7.06, 7.47),
                       (("Ce", (0, 0.25, 0.5377)), ("Cu", (0, 0.051, 0.1648)))),
    # orthorhombic F
    ReferenceStructure("TiSi2 (C54)", "TiSi2", 70, _ortho(8.2671, 4.8000, 8.5505),
                       (("Ti", (0, 0, 0)), ("Si", (0.3335, 0, 0)))),
    # orthorhombic C (base-centred)
    ReferenceStructure("alpha-uranium", "U", 63, _ortho(2.8537, 5.8695, 4.9548),
                       (("U", (0, 0.1025, 0.25)),)),
    ReferenceStructure("alpha-gallium", "Ga", 64, _ortho(4.5192, 7.6586, 4.5258),
                       (("Ga", (0, 0.1539, 0.0798)),)),
    # hexagonal P (hexagonal and trigonal-P groups)
    ReferenceStructure("magnesium", "Mg", 194, _hexagonal(3.2094, 5.2108),
                       (("Mg", (T, TT, 0.25)),)),
    ReferenceStructure("zinc", "Zn", 194, _hexagonal(2.6649, 4.9468), (("Zn", (T, TT, 0.25)),)),
    ReferenceStructure("graphite", "C", 194, _hexagonal(2.464, 6.711),
                       (("C", (0, 0, 0.25)), ("C", (T, TT, 0.25)))),
    ReferenceStructure("zincite (wurtzite)", "ZnO", 186, _hexagonal(3.2495, 5.2069),
                       (("Zn", (T, TT, 0)), ("O", (T, TT, 0.3819)))),
    ReferenceStructure("tungsten carbide", "WC", 187, _hexagonal(2.906, 2.837),
                       (("W", (0, 0, 0)), ("C", (T, TT, 0.5)))),
    ReferenceStructure("nickeline", "NiAs", 194, _hexagonal(3.619, 5.034),
                       (("Ni", (0, 0, 0)), ("As", (T, TT, 0.25)))),
    ReferenceStructure("tellurium", "Te", 152, _hexagonal(4.4572, 5.929),
                       (("Te", (0.2636, 0, T)),)),
    # rhombohedral (hexagonal axes)
    ReferenceStructure("calcite", "CaCO3", 167, _hexagonal(4.990, 17.062),
                       (("Ca", (0, 0, 0)), ("C", (0, 0, 0.25)), ("O", (0.2578, 0, 0.25)))),
    ReferenceStructure("corundum", "Al2O3", 167, _hexagonal(4.7589, 12.991),
                       (("Al", (0, 0, 0.3523)), ("O", (0.3064, 0, 0.25)))),
    ReferenceStructure("hematite", "Fe2O3", 167, _hexagonal(5.0356, 13.7489),
                       (("Fe", (0, 0, 0.3553)), ("O", (0.3059, 0, 0.25)))),
    ReferenceStructure("bismuth", "Bi", 166, _hexagonal(4.5460, 11.862), (("Bi", (0, 0, 0.2339)),)),
    # monoclinic P
    ReferenceStructure("baddeleyite", "ZrO2", 14, _mono(5.1505, 5.2116, 5.3173, 99.23),
                       (("Zr", (0.2754, 0.0395, 0.2083)), ("O", (0.0700, 0.3317, 0.3447)),
                        ("O", (0.4496, 0.7569, 0.4792)))),
    ReferenceStructure("hafnia", "HfO2", 14, _mono(5.117, 5.175, 5.291, 99.22),
                       (("Hf", (0.2758, 0.0404, 0.2089)), ("O", (0.0742, 0.3318, 0.3466)),
                        ("O", (0.4487, 0.7581, 0.4801)))),
    # monoclinic C
    ReferenceStructure("tenorite", "CuO", 15, _mono(4.6837, 3.4226, 5.1288, 99.54),
                       (("Cu", (0.25, 0.25, 0)), ("O", (0, 0.4184, 0.25)))),
    # triclinic (Winter & Ghose 1979, Am. Mineral. 64, 573)
    ReferenceStructure("kyanite", "Al2SiO5", 2, (7.1262, 7.8520, 5.5724, 89.99, 101.11, 106.03),
                       (("Al", (0.3254, 0.7040, 0.4582)), ("Al", (0.2974, 0.6989, 0.9505)),
                        ("Al", (0.0998, 0.3862, 0.6403)), ("Al", (0.1120, 0.9175, 0.1649)),
                        ("Si", (0.2962, 0.0649, 0.7066)), ("Si", (0.2910, 0.3317, 0.1892)),
                        ("O", (0.1095, 0.1468, 0.1288)), ("O", (0.1230, 0.6856, 0.1812)),
                        ("O", (0.2747, 0.4545, 0.9547)), ("O", (0.2831, 0.9354, 0.9353)),
                        ("O", (0.1084, 0.1520, 0.6669)), ("O", (0.1219, 0.6307, 0.6389)),
                        ("O", (0.2822, 0.4453, 0.4288)), ("O", (0.2915, 0.9467, 0.4659)),
                        ("O", (0.5008, 0.2749, 0.2440)), ("O", (0.5015, 0.2312, 0.7553)))),
)


def render_reference_patterns(settings: int = 5, seed: int = 0,
                              grid: PatternGrid | None = None
                              ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every reference structure rendered ``settings`` times through the synthetic
    generator's random instrument (peak widths and shapes, zero shift, sample displacement,
    background, counting noise, Debye-Waller B): ``(patterns (N, L) float32, Bravais labels
    (N,) as indices of BRAVAIS_LATTICES, names)``. Labels are spglib's."""
    from datasets.xrd_structure import bravais_lattice

    grid = grid or PatternGrid()
    patterns, labels, names = [], [], []
    for index, ref in enumerate(REFERENCE_STRUCTURES):
        crystal = ref.crystal()
        bravais = bravais_lattice(crystal)[0]
        for setting in range(settings):
            rng = np.random.default_rng([seed, index, setting])
            patterns.append(simulate_pattern(bravais, rng, grid, crystal=crystal))
            labels.append(BRAVAIS_LATTICES.index(bravais))
            names.append(f"{ref.name} #{setting}")
    return np.stack(patterns), np.asarray(labels, dtype=np.int64), names


def write_reference_file(path: str | Path, settings: int = 5, seed: int = 0,
                         grid: PatternGrid | None = None) -> Path:
    """The rendered reference set as an HDF5 file in the ``xrd`` schema (``--data`` reads it;
    ``names`` holds each pattern's structure and setting)."""
    import h5py

    from datasets.base import atomic_h5

    grid = grid or PatternGrid()
    patterns, labels, names = render_reference_patterns(settings, seed, grid)
    path = Path(path)
    with atomic_h5(path) as f:
        f.create_dataset("patterns", data=patterns)
        f.create_dataset("labels", data=labels)
        f.create_dataset("two_theta", data=grid.two_theta())
        f.create_dataset("names", data=np.asarray(names, dtype=h5py.string_dtype()))
        f.attrs["label_set"] = "bravais"
        f.attrs["generator"] = "scitune xrd reference structures"
        f.attrs["wavelength_angstrom"] = grid.wavelength
    return path


if __name__ == "__main__":  # python -m datasets.xrd_reference OUT.h5 [SETTINGS]
    import sys

    out = write_reference_file(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5)
    print(f"wrote {out}: {len(REFERENCE_STRUCTURES)} structures")
