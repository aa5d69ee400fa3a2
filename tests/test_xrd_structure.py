"""Structure-factor intensities (datasets/xrd_structure.py) against pymatgen's XRDCalculator on
the real structures of datasets/xrd_reference.py, labelled by spglib."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest

from datasets.xrd_physics import BRAVAIS_LATTICES, BRAVAIS_TO_SYSTEM, PatternGrid
from datasets.xrd_reference import REFERENCE_STRUCTURES
from datasets.xrd_structure import Crystal, bravais_lattice, expand, stick_pattern

GRID = PatternGrid()


@pytest.fixture(scope="module")
def crystals():
    return {ref.name: ref.crystal() for ref in REFERENCE_STRUCTURES}


def binned(two_theta: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """Stick intensities summed into the project's 2theta grid bins."""
    idx = np.floor((two_theta - GRID.two_theta_min) / GRID.step).astype(int)
    inside = (idx >= 0) & (idx < GRID.length)
    out = np.zeros(GRID.length)
    np.add.at(out, idx[inside], intensity[inside])
    return out


def test_reference_set_spans_every_crystal_system_and_bravais_lattice(crystals):
    assert len(REFERENCE_STRUCTURES) >= 30
    labels = {}
    for ref in REFERENCE_STRUCTURES:
        lattice, number = bravais_lattice(crystals[ref.name])
        assert number == ref.space_group, f"{ref.name}: spglib finds {number}, not {ref.space_group}"
        labels[ref.name] = lattice
    assert set(labels.values()) == set(BRAVAIS_LATTICES)
    systems = {int(BRAVAIS_TO_SYSTEM[BRAVAIS_LATTICES.index(b)]) for b in labels.values()}
    assert len(systems) == 7
    counts = Counter(labels.values())
    assert min(counts.values()) >= 1 and counts["cF"] >= 3


@pytest.mark.parametrize("b_iso", [0.0, 1.2])
def test_stick_patterns_match_pymatgen(crystals, b_iso):
    from pymatgen.analysis.diffraction.xrd import XRDCalculator
    from pymatgen.core import Lattice, Structure

    worst = 1.0
    for ref in REFERENCE_STRUCTURES:
        crystal = crystals[ref.name]
        if b_iso:
            crystal = Crystal(crystal.cell, crystal.species, crystal.frac,
                              b_iso=np.full(len(crystal.species), b_iso))
        mine = stick_pattern(crystal, GRID.wavelength, GRID.two_theta_max, GRID.two_theta_min)
        calculator = XRDCalculator(wavelength=GRID.wavelength, debye_waller_factors=(
            {e: b_iso for e in set(crystal.species)} if b_iso else None))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure(Lattice.from_parameters(*crystal.cell), list(crystal.species),
                                  crystal.frac)
            theirs = calculator.get_pattern(structure, scaled=False,
                                            two_theta_range=(GRID.two_theta_min,
                                                             GRID.two_theta_max))
        x, y = np.asarray(theirs.x), np.asarray(theirs.y)
        for position in x[y >= 0.01 * y.max()]:  # every line of >= 1 % has ours within a step
            nearest = np.min(np.abs(mine[0] - position))
            assert nearest <= GRID.step, f"{ref.name}: no line near {position:.3f} deg"
        a, b = binned(*mine), binned(x, y)
        cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        worst = min(worst, cosine)
        assert cosine >= 0.99, f"{ref.name}: cosine {cosine:.4f} against pymatgen"
    assert worst >= 0.99


def test_extinctions_and_intensities_come_from_the_atoms(crystals):
    wavelength = GRID.wavelength

    def line(crystal, d):
        """Intensity of the line at spacing d (0 if absent)."""
        two_theta = 2 * np.degrees(np.arcsin(wavelength / (2 * d)))
        tt, intensity = stick_pattern(crystal, wavelength, 80.0)
        near = np.abs(tt - two_theta) < 1e-3
        return float(intensity[near].sum())

    si, a_si = crystals["silicon (diamond)"], 5.4310
    assert line(si, a_si / 2) == 0.0  # 200: diamond glide, absent although F-centring allows it
    assert line(si, a_si / np.sqrt(3)) > 0 and line(si, a_si / 4) > 0  # 111, 400
    fe, a_fe = crystals["alpha-iron"], 2.8665
    assert line(fe, a_fe) == 0.0 and line(fe, a_fe / np.sqrt(2)) > 0  # bcc: 100 absent, 110 not
    cscl, a_cscl = crystals["caesium chloride"], 4.123
    assert line(cscl, a_cscl) > 0  # same atoms' places as bcc, two elements: 100 present
    # NaCl: 111 scatters f(Na) - f(Cl), 200 scatters f(Na) + f(Cl): 200 far stronger
    nacl, a_nacl = crystals["halite"], 5.6402
    assert line(nacl, a_nacl / 2) > 5 * line(nacl, a_nacl / np.sqrt(3)) > 0
    # KCl-like contrast vanishes when both sites hold one element: a simple cubic cell
    same = Crystal(nacl.cell, tuple("Na" for _ in nacl.species), nacl.frac)
    assert line(same, a_nacl / np.sqrt(3)) == 0.0


def test_expand_and_bravais_refuse_what_cannot_be_a_crystal():
    with pytest.raises(ValueError, match="form factor"):
        stick_pattern(Crystal((4.0, 4.0, 4.0, 90, 90, 90), ("Xx",), np.zeros((1, 3))))
    with pytest.raises(ValueError, match="species"):
        Crystal((4.0, 4.0, 4.0, 90, 90, 90), ("Cu", "Cu"), np.zeros((1, 3)))
    crystal = expand(225, (3.6149, 3.6149, 3.6149, 90, 90, 90), [("Cu", (0, 0, 0))])
    assert len(crystal.species) == 4 and bravais_lattice(crystal) == ("cF", 225)


def test_space_group_settings_cover_all_230_groups_once():
    from datasets.xrd_structure import space_group_settings

    settings = space_group_settings()
    assert set(settings) == set(BRAVAIS_LATTICES)
    assert sum(len(halls) for halls in settings.values()) == 230
    assert len(settings["aP"]) == 2 and len(settings["hR"]) == 7 and len(settings["cF"]) == 11


def test_random_crystals_have_the_intended_lattice_and_sane_atoms():
    from datasets.xrd_physics import sample_lattice
    from datasets.xrd_structure import MAX_ATOMS, MIN_DISTANCE, _min_distance, random_crystal

    rng = np.random.default_rng(7)
    for bravais in BRAVAIS_LATTICES:
        for _ in range(3):
            cell = sample_lattice(bravais, rng)
            crystal, _hall = random_crystal(bravais, cell, rng, b_iso=1.0)
            assert bravais_lattice(crystal)[0] == bravais
            assert 1 <= len(crystal.species) <= MAX_ATOMS
            assert _min_distance(cell, crystal.frac) >= MIN_DISTANCE
            two_theta, intensity = stick_pattern(crystal, GRID.wavelength, GRID.two_theta_max)
            assert np.all(np.isfinite(intensity)) and np.all(intensity > 0)


def test_structure_intensities_are_reproducible_and_not_the_random_ones():
    from datasets.xrd_physics import simulate_pattern

    one = simulate_pattern("cF", np.random.default_rng([5, 1]), GRID, intensities="structure")
    again = simulate_pattern("cF", np.random.default_rng([5, 1]), GRID, intensities="structure")
    other = simulate_pattern("cF", np.random.default_rng([5, 1]), GRID, intensities="random")
    assert one.shape == (GRID.length,) and one.dtype == np.float32
    assert np.array_equal(one, again) and not np.array_equal(one, other)
    assert one.max() == pytest.approx(1.0) and one.min() >= 0
    with pytest.raises(ValueError, match="intensities"):
        simulate_pattern("cF", np.random.default_rng(0), GRID, intensities="made-up")


def test_intensities_data_option_generates_its_own_cached_set():
    import h5py

    from datasets import get_dataset
    from datasets.base import DataError

    spec = get_dataset("xrd")
    structured = spec.prepare(None, 42, 0, {"intensities": "structure"})
    assert spec.prepare(None, 42, 0, {}) == structured  # structure is the default
    plain = spec.prepare(None, 42, 0, {"intensities": "random"})
    assert structured != plain
    with h5py.File(structured, "r") as f:
        assert f.attrs["intensities"] == "structure" and f["patterns"].shape == (42, 2048)
    with h5py.File(plain, "r") as f:
        assert f.attrs["intensities"] == "random"
    with pytest.raises(DataError, match="intensities must be one of random, structure"):
        spec.prepare(None, 42, 0, {"intensities": "atoms"})


def test_reference_file_is_read_by_data_with_spglib_labels(tmp_path):
    import h5py

    from datasets import get_dataset
    from datasets.xrd_reference import write_reference_file

    path = write_reference_file(tmp_path / "real.h5", settings=2, seed=3)
    spec = get_dataset("xrd")
    data = spec.load(spec.prepare(str(path), 0, 0, {}), 0, {})
    labels = np.asarray(data.arrays["y"])
    assert len(labels) == 2 * len(REFERENCE_STRUCTURES)
    expected = [BRAVAIS_LATTICES.index(bravais_lattice(ref.crystal())[0])
                for ref in REFERENCE_STRUCTURES for _ in range(2)]
    assert labels.tolist() == expected
    x = np.asarray(data.arrays["x"])
    assert np.all(np.isfinite(x)) and np.allclose(x.max(1), 1.0)
    assert not np.array_equal(x[0], x[1])  # two instrument settings of one structure differ
    with h5py.File(path, "r") as f:
        assert f["names"][0].decode() == f"{REFERENCE_STRUCTURES[0].name} #0"


def test_march_dollase_keeps_total_intensity_over_all_directions():
    from datasets.xrd_structure import march_dollase

    directions = np.random.default_rng(3).normal(size=(200_000, 3))
    for ratio in (0.6, 1.0, 1.67):
        factor = march_dollase(directions, np.eye(3), (0, 0, 1), ratio)
        assert factor.mean() == pytest.approx(1.0, abs=0.01)
    plates = march_dollase(np.array([[0, 0, 1.0], [1.0, 0, 0]]), np.eye(3), (0, 0, 1), 0.6)
    assert plates[0] == pytest.approx(0.6**-3) and plates[1] == pytest.approx(0.6**1.5)


def test_plate_texture_on_001_strengthens_00l_lines_exactly_by_march_dollase(crystals):
    rutile = crystals["rutile"]  # tetragonal: the 00l line holds only (00l), h00 only (h00)/(0h0)
    wavelength = GRID.wavelength
    plain = dict(zip(*(np.round(a, 6) for a in stick_pattern(rutile, wavelength, 80.0)),
                     strict=True))
    same = stick_pattern(rutile, wavelength, 80.0, texture=((0, 0, 1), 1.0))
    assert np.allclose(same[1], list(plain.values()))
    two_theta, textured = stick_pattern(rutile, wavelength, 80.0, texture=((0, 0, 1), 0.6))
    textured_by_angle = dict(zip(np.round(two_theta, 6), textured, strict=True))

    def line(h: int, k: int, l: int) -> float:  # noqa: E741
        d = 1.0 / np.sqrt((h * h + k * k) / rutile.cell[0] ** 2 + l * l / rutile.cell[2] ** 2)
        return float(np.round(2 * np.degrees(np.arcsin(wavelength / (2 * d))), 6))

    assert textured_by_angle[line(0, 0, 2)] / plain[line(0, 0, 2)] == pytest.approx(0.6**-3)
    assert textured_by_angle[line(2, 0, 0)] / plain[line(2, 0, 0)] == pytest.approx(0.6**1.5)


def test_preferred_orientation_option_is_seeded_and_refused_without_structures(tmp_path,
                                                                               monkeypatch):
    from datasets import get_dataset
    from datasets.base import DataError
    from datasets.xrd_physics import simulate_pattern

    def pattern(orientation: str) -> np.ndarray:
        return simulate_pattern("tP", np.random.default_rng([8, 2]), GRID,
                                intensities="structure", orientation=orientation)

    textured = pattern("march")
    assert np.array_equal(textured, pattern("march"))
    assert not np.array_equal(textured, pattern("none"))
    with pytest.raises(ValueError, match="intensities='structure'"):
        simulate_pattern("tP", np.random.default_rng(0), GRID, orientation="march")
    monkeypatch.setenv("SCITUNE_CACHE", str(tmp_path))
    spec = get_dataset("xrd")
    with pytest.raises(DataError, match="needs intensities=structure"):
        spec.prepare(None, 100, 0, {"intensities": "random", "orientation": "march"})
    with pytest.raises(DataError, match="orientation must be one of"):
        spec.prepare(None, 100, 0, {"intensities": "structure", "orientation": "tilted"})
    assert not list(tmp_path.rglob("*.h5"))
