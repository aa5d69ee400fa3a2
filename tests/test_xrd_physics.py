"""Tests for the physical powder-XRD simulator in ``datasets/xrd_physics.py``."""

from __future__ import annotations

import itertools
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from datasets.xrd_physics import (  # noqa: E402
    BRAVAIS_LATTICES,
    BRAVAIS_TO_SYSTEM,
    CRYSTAL_SYSTEMS,
    PatternGrid,
    allowed,
    reflection_lines,
    sample_lattice,
    simulate_pattern,
    simulate_patterns,
)

LAM = 1.5406
CUBIC_90 = (90.0, 90.0, 90.0)


def bragg_two_theta(d: float, lam: float = LAM) -> float:
    return 2.0 * math.degrees(math.asin(lam / (2.0 * d)))


def brute_force_lines(d_of, rule, two_theta_max: float, n: int = 12):
    """Independent reference: full (+-) hkl cube, explicit d formula, grouped by d.

    Returns a sorted list of (two_theta, multiplicity).
    """
    d_min = LAM / (2.0 * math.sin(math.radians(two_theta_max) / 2.0))
    groups: dict[float, int] = {}
    for h, k, l in itertools.product(range(-n, n + 1), repeat=3):  # noqa: E741
        if (h, k, l) == (0, 0, 0) or not rule(h, k, l):
            continue
        d = d_of(h, k, l)
        if d < d_min:
            continue
        key = round(d, 7)
        groups[key] = groups.get(key, 0) + 1
    return sorted((bragg_two_theta(d), m) for d, m in groups.items())


def line_of(tt: np.ndarray, target: float, tol: float = 1e-6) -> int:
    hits = np.flatnonzero(np.abs(tt - target) < tol)
    assert hits.size == 1, f"expected exactly one line at {target}, got {hits.size}"
    return int(hits[0])


# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------


def test_class_constants():
    assert BRAVAIS_LATTICES == (
        "aP", "mP", "mC", "oP", "oC", "oI", "oF", "tP", "tI", "hR", "hP", "cP", "cI", "cF",
    )  # fmt: skip
    assert len(CRYSTAL_SYSTEMS) == 7
    assert BRAVAIS_TO_SYSTEM.shape == (14,)
    assert np.issubdtype(BRAVAIS_TO_SYSTEM.dtype, np.integer)
    by_name = {
        b: CRYSTAL_SYSTEMS[s] for b, s in zip(BRAVAIS_LATTICES, BRAVAIS_TO_SYSTEM, strict=True)
    }
    assert by_name["aP"] == "triclinic"
    assert by_name["mP"] == by_name["mC"] == "monoclinic"
    assert {by_name[b] for b in ("oP", "oC", "oI", "oF")} == {"orthorhombic"}
    assert by_name["tP"] == by_name["tI"] == "tetragonal"
    assert by_name["hR"] == "trigonal"
    assert by_name["hP"] == "hexagonal"
    assert {by_name[b] for b in ("cP", "cI", "cF")} == {"cubic"}
    # Every system is used.
    assert set(BRAVAIS_TO_SYSTEM.tolist()) == set(range(7))


def test_grid_bin_centres():
    g = PatternGrid()
    tt = g.two_theta()
    assert tt.shape == (2048,)
    step = 70.0 / 2048
    np.testing.assert_allclose(np.diff(tt), step)
    assert tt[0] == pytest.approx(10.0 + step / 2)
    assert tt[-1] == pytest.approx(80.0 - step / 2)


# --------------------------------------------------------------------------
# Extinction rules
# --------------------------------------------------------------------------


def test_allowed_rules():
    h = np.array([1, 1, 2, 1, 2, 1, 0, 2])
    k = np.array([0, 1, 0, 1, 2, 1, 0, 1])
    l = np.array([0, 0, 0, 1, 0, 2, 2, 1])  # noqa: E741
    # 100 110 200 111 220 112 002 211
    assert allowed(h, k, l, "P").all()
    np.testing.assert_array_equal(
        allowed(h, k, l, "I"), [False, True, True, False, True, True, True, True]
    )
    np.testing.assert_array_equal(
        allowed(h, k, l, "F"), [False, False, True, True, True, False, True, False]
    )
    np.testing.assert_array_equal(
        allowed(h, k, l, "C"), [False, True, True, True, True, True, True, False]
    )


def test_allowed_rhombohedral_obverse():
    # -h + k + l = 0 mod 3 (obverse, hexagonal axes); calcite-type lines.
    present = [(0, 1, 2), (1, 0, 4), (0, 0, 6), (1, 1, 0), (1, 1, 3), (2, 0, 2), (0, 0, 3),
               (1, 0, 1), (0, 1, -1), (-1, 0, -1)]  # fmt: skip
    absent = [(1, 0, 0), (0, 0, 1), (0, 0, 2), (1, 0, 2), (0, 1, 1), (1, 0, -1), (2, 0, 0),
              (1, 1, 1)]  # fmt: skip
    hp, kp, lp = np.array(present).T
    ha, ka, la = np.array(absent).T
    assert allowed(hp, kp, lp, "R").all()
    assert not allowed(ha, ka, la, "R").any()
    # Friedel pairs share the verdict.
    assert (allowed(hp, kp, lp, "R") == allowed(-hp, -kp, -lp, "R")).all()


def test_allowed_negative_indices_and_bad_centring():
    # Parity with negative indices must follow mathematical, not C, modulo.
    assert allowed(-1, 0, 1, "I")
    assert not allowed(-1, 0, 0, "I")
    assert allowed(-1, -1, 1, "F")
    assert not allowed(-1, 0, 1, "F")
    assert allowed(-1, 1, 0, "C")
    with pytest.raises(ValueError):
        allowed(1, 0, 0, "Q")


# --------------------------------------------------------------------------
# Reflection lines
# --------------------------------------------------------------------------


def test_cubic_f_aluminium_first_lines():
    a = 4.05
    tt, mult, d = reflection_lines((a, a, a, *CUBIC_90), "F", LAM, 90.0)
    hkls = [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2)]
    expected_tt = [bragg_two_theta(a / math.sqrt(sum(x * x for x in t))) for t in hkls]
    assert expected_tt[0] == pytest.approx(38.47, abs=0.01)
    assert expected_tt[1] == pytest.approx(44.72, abs=0.01)
    assert len(tt) == 5  # 400 lies at 99 degrees
    np.testing.assert_allclose(tt, expected_tt, atol=0.01)
    np.testing.assert_allclose(d, [a / math.sqrt(sum(x * x for x in t)) for t in hkls])
    # Full crystallographic multiplicity (hkl and -h-k-l both counted).
    np.testing.assert_array_equal(mult, [8, 6, 12, 24, 8])
    # Ratios are convention independent.
    np.testing.assert_allclose(mult / mult[0], [1, 0.75, 1.5, 3, 1])
    assert np.all(np.diff(tt) > 0)


def _cubic_n_values(centring: str, a: float, tt_max: float) -> tuple[list[int], np.ndarray]:
    tt, mult, d = reflection_lines((a, a, a, *CUBIC_90), centring, LAM, tt_max)
    n = np.rint((a / d) ** 2).astype(int)
    np.testing.assert_allclose((a / d) ** 2, n, atol=1e-8)
    return n.tolist(), mult


def test_cubic_i_lines():
    n, mult = _cubic_n_values("I", 3.3, 120.0)
    assert n[:3] == [2, 4, 6]  # 110, 200, 211
    assert 1 not in n and 3 not in n  # no 100, no 111
    assert all(x % 2 == 0 for x in n)
    np.testing.assert_array_equal(mult[:3], [12, 6, 24])


def test_cubic_p_lines():
    n, mult = _cubic_n_values("P", 4.0, 120.0)
    assert n[:6] == [1, 2, 3, 4, 5, 6]  # 100 110 111 200 210 211
    np.testing.assert_array_equal(mult[:6], [6, 12, 8, 6, 24, 24])
    assert 7 not in n  # h^2 + k^2 + l^2 = 7 is impossible
    # 221 and 300 coincide in d and form one powder line: 24 + 6.
    assert mult[n.index(9)] == 30


def test_cubic_f_matches_unmixed_parity_enumeration():
    a = 5.43
    _, mult = _cubic_n_values("F", a, 150.0)
    ref = brute_force_lines(
        lambda h, k, l: a / math.sqrt(h * h + k * k + l * l),  # noqa: E741
        lambda h, k, l: h % 2 == k % 2 == l % 2,  # noqa: E741
        150.0,
    )
    tt, mult, _ = reflection_lines((a, a, a, *CUBIC_90), "F", LAM, 150.0)
    assert len(tt) == len(ref)
    np.testing.assert_allclose(tt, [r[0] for r in ref], atol=1e-6)
    np.testing.assert_array_equal(mult, [r[1] for r in ref])


def test_hexagonal_and_rhombohedral_against_brute_force():
    def hex_d(a, c):
        def d_of(h, k, l):  # noqa: E741
            return 1.0 / math.sqrt(4.0 / 3.0 * (h * h + h * k + k * k) / a**2 + l * l / c**2)

        return d_of

    # Calcite-like hR cell on hexagonal axes.
    a, c = 4.99, 17.06
    cell = (a, a, c, 90.0, 90.0, 120.0)
    tt, mult, _ = reflection_lines(cell, "R", LAM, 60.0)
    ref = brute_force_lines(hex_d(a, c), lambda h, k, l: (-h + k + l) % 3 == 0, 60.0, n=14)  # noqa: E741
    np.testing.assert_allclose(tt, [r[0] for r in ref], atol=1e-6)
    np.testing.assert_array_equal(mult, [r[1] for r in ref])
    # Known calcite lines: 012 (m=6) ~23.0 deg, 104 (m=6) ~29.4 deg, 006 (m=2), 110 (m=6).
    f = hex_d(a, c)
    for hkl, m in [((0, 1, 2), 6), ((1, 0, 4), 6), ((0, 0, 6), 2), ((1, 1, 0), 6)]:
        i = line_of(tt, bragg_two_theta(f(*hkl)), tol=1e-6)
        assert mult[i] == m
    assert bragg_two_theta(f(1, 0, 4)) == pytest.approx(29.4, abs=0.1)
    # 003 is allowed but 001/002 are not.
    assert np.any(np.isclose(tt, bragg_two_theta(c / 3)))
    assert not np.any(np.isclose(tt, bragg_two_theta(c), atol=1e-3))
    assert not np.any(np.isclose(tt, bragg_two_theta(c / 2), atol=1e-3))

    # Primitive hexagonal: 100 -> 6, 001 -> 2, 101 -> 12.
    a, c = 3.2, 5.2
    tt, mult, _ = reflection_lines((a, a, c, 90.0, 90.0, 120.0), "P", LAM, 80.0)
    f = hex_d(a, c)
    assert mult[line_of(tt, bragg_two_theta(f(1, 0, 0)))] == 6
    assert mult[line_of(tt, bragg_two_theta(f(0, 0, 1)))] == 2
    assert mult[line_of(tt, bragg_two_theta(f(1, 0, 1)))] == 12
    ref = brute_force_lines(f, lambda h, k, l: True, 80.0)  # noqa: E741
    np.testing.assert_array_equal(mult, [r[1] for r in ref])


def test_c_centred_orthorhombic_against_brute_force():
    a, b, c = 5.1, 7.3, 9.7
    tt, mult, _ = reflection_lines((a, b, c, *CUBIC_90), "C", LAM, 70.0)
    ref = brute_force_lines(
        lambda h, k, l: 1.0 / math.sqrt((h / a) ** 2 + (k / b) ** 2 + (l / c) ** 2),  # noqa: E741
        lambda h, k, l: (h + k) % 2 == 0,  # noqa: E741
        70.0,
    )
    np.testing.assert_allclose(tt, [r[0] for r in ref], atol=1e-6)
    np.testing.assert_array_equal(mult, [r[1] for r in ref])
    assert set(mult.tolist()) <= {2, 4, 8}
    # 100, 010 absent; 001, 110, 200, 020 present.
    assert not np.any(np.isclose(tt, bragg_two_theta(a), atol=1e-4))
    assert not np.any(np.isclose(tt, bragg_two_theta(b), atol=1e-4))
    for d in (c, a / 2, b / 2, 1 / math.hypot(1 / a, 1 / b)):
        line_of(tt, bragg_two_theta(d))


@pytest.mark.parametrize("bravais", ["aP", "mP", "mC", "oI", "tI", "hR", "cF"])
def test_total_multiplicity_counts_every_lattice_point(bravais):
    """Sum of multiplicities == number of allowed non-zero hkl inside the Ewald limit."""
    rng = np.random.default_rng(11)
    for _ in range(5):
        cell = sample_lattice(bravais, rng)
        tt_max = 70.0
        tt, mult, d = reflection_lines(cell, bravais[1], LAM, tt_max)
        a, b, c, al, be, ga = cell
        ca, cb, cg = (math.cos(math.radians(x)) for x in (al, be, ga))
        g = np.array([[a * a, a * b * cg, a * c * cb], [a * b * cg, b * b, b * c * ca],
                      [a * c * cb, b * c * ca, c * c]])  # fmt: skip
        gs = np.linalg.inv(g)
        n = 16  # generous box: > max length / d_min for sampled cells
        rng_idx = np.arange(-n, n + 1)
        hkl = np.stack(np.meshgrid(rng_idx, rng_idx, rng_idx, indexing="ij"), -1).reshape(-1, 3)
        hkl = hkl[np.any(hkl != 0, axis=1)]
        hkl = hkl[allowed(hkl[:, 0], hkl[:, 1], hkl[:, 2], bravais[1])]
        q = np.einsum("ni,ij,nj->n", hkl, gs, hkl)
        d_min = LAM / (2 * math.sin(math.radians(tt_max / 2)))
        assert int(mult.sum()) == int(np.sum(q <= 1 / d_min**2 * (1 + 1e-12)))
        assert np.all(mult % 2 == 0)
        np.testing.assert_allclose(tt, [bragg_two_theta(x) for x in d], atol=1e-9)
        assert np.all(np.diff(tt) > 0) and tt.max() <= tt_max
        # Metric symmetry: triclinic lines are Friedel pairs (m = 2), monoclinic
        # lines m = 2 or 4; rare exceptions are genuine accidental d-coincidences.
        if bravais == "aP":
            assert np.mean(mult == 2) > 0.98
        if bravais[0] == "m":
            assert np.mean((mult == 2) | (mult == 4)) > 0.98


def test_reflection_lines_empty_below_first_line():
    tt, mult, d = reflection_lines((4.0, 4.0, 4.0, *CUBIC_90), "P", LAM, 10.0)
    assert tt.size == mult.size == d.size == 0


# --------------------------------------------------------------------------
# Lattice sampling
# --------------------------------------------------------------------------


def _rel_diff(x, y):
    return abs(x - y) / max(x, y)


@pytest.mark.parametrize("bravais", BRAVAIS_LATTICES)
def test_sample_lattice_constraints(bravais):
    rng = np.random.default_rng(123)
    for _ in range(60):
        cell = sample_lattice(bravais, rng)
        assert len(cell) == 6
        a, b, c, al, be, ga = cell
        assert all(isinstance(x, float) for x in cell)
        assert all(2.5 <= x <= 25.0 for x in (a, b, c))
        fam = bravais[0]
        if fam == "c":
            assert a == b == c and (al, be, ga) == CUBIC_90
        elif fam == "t":
            assert a == b and _rel_diff(a, c) > 0.03 and (al, be, ga) == CUBIC_90
            if bravais == "tI":
                assert abs(c / a - math.sqrt(2)) > 0.03
        elif fam == "o":
            assert (al, be, ga) == CUBIC_90
            assert min(_rel_diff(a, b), _rel_diff(b, c), _rel_diff(a, c)) > 0.03
        elif fam == "h":
            assert a == b and (al, be, ga) == (90.0, 90.0, 120.0)
        elif fam == "m":
            assert al == ga == 90.0 and abs(be - 90.0) > 3.0
            assert min(_rel_diff(a, b), _rel_diff(b, c), _rel_diff(a, c)) > 0.03
        else:  # triclinic
            assert all(abs(x - 90.0) > 3.0 for x in (al, be, ga))
            assert min(_rel_diff(a, b), _rel_diff(b, c), _rel_diff(a, c)) > 0.03
        ca, cb, cg = (math.cos(math.radians(x)) for x in (al, be, ga))
        vol2 = 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg
        assert vol2 > 0.0
        # At least one line in the default range for every sampled cell.
        assert reflection_lines(cell, bravais[1], LAM, 80.0)[0].size > 0


def test_sample_lattice_rejects_unknown():
    with pytest.raises(ValueError):
        sample_lattice("xX", np.random.default_rng(0))


# --------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------


def test_pattern_shape_dtype_normalisation():
    grid = PatternGrid()
    for i, b in enumerate(BRAVAIS_LATTICES):
        p = simulate_pattern(b, np.random.default_rng([7, i]), grid)
        assert p.shape == (grid.length,)
        assert p.dtype == np.float32
        assert np.isfinite(p).all()
        assert p.max() == pytest.approx(1.0)
        assert p.min() >= 0.0


def test_custom_grid():
    grid = PatternGrid(length=500, two_theta_min=5.0, two_theta_max=60.0)
    p = simulate_pattern("tP", np.random.default_rng(1), grid)
    assert p.shape == (500,) and p.dtype == np.float32 and p.max() == pytest.approx(1.0)


def test_peaks_sit_on_predicted_lines_aluminium():
    a = 4.05
    cell = (a, a, a, *CUBIC_90)
    grid = PatternGrid()
    tt_grid = grid.two_theta()
    lines, _, _ = reflection_lines(cell, "F", LAM, 85.0)
    forbidden = [bragg_two_theta(a / math.sqrt(n)) for n in (1, 2, 5, 6)]  # 100 110 210 211
    for s in range(20):
        p = simulate_pattern("cF", np.random.default_rng([99, s]), grid, cell=cell)
        peak = tt_grid[np.argmax(p)]
        assert np.min(np.abs(lines - peak)) < 0.1
        # All strong bins belong to a line (FWHM <= 0.4 deg).
        strong = tt_grid[p > 0.6]
        assert np.min(np.abs(strong[:, None] - lines[None, :]), axis=1).max() < 0.6
        # No intensity at extinct positions beyond background + noise.
        for f in forbidden:
            window = np.abs(tt_grid - f) < 0.1
            assert p[window].max() < 0.5


def test_peaks_sit_on_predicted_lines_random_cells():
    grid = PatternGrid()
    tt_grid = grid.two_theta()
    for i, b in enumerate(BRAVAIS_LATTICES):
        for s in range(3):
            rng = np.random.default_rng([5, i, s])
            cell = sample_lattice(b, rng)
            p = simulate_pattern(b, rng, grid, cell=cell)
            lines, _, _ = reflection_lines(cell, b[1], LAM, 90.0)
            peak = tt_grid[np.argmax(p)]
            assert np.min(np.abs(lines - peak)) < 0.2, (b, cell)


def test_simulate_patterns_reproducible_per_index():
    labels = np.array([13, 0, 9, 10, 4, 5, 1, 2, 12, 11])
    x = simulate_patterns(labels, seed=42)
    assert x.shape == (10, 2048) and x.dtype == np.float32
    # Same (seed, i) -> same pattern, independent of the rest of the batch.
    np.testing.assert_array_equal(simulate_patterns(labels[:4], seed=42), x[:4])
    for i in (0, 3, 9):
        p = simulate_pattern(BRAVAIS_LATTICES[labels[i]], np.random.default_rng([42, i]))
        np.testing.assert_array_equal(p, x[i])
    np.testing.assert_array_equal(simulate_patterns(labels, seed=42), x)
    # String labels are accepted too.
    names = np.array([BRAVAIS_LATTICES[j] for j in labels])
    np.testing.assert_array_equal(simulate_patterns(names, seed=42), x)
    # Different seed -> different patterns.
    y = simulate_patterns(labels, seed=43)
    assert all(not np.array_equal(x[i], y[i]) for i in range(len(labels)))
    # Different index, same label -> different patterns.
    z = simulate_patterns(np.full(2, 13), seed=42)
    assert not np.array_equal(z[0], z[1])


def test_simulate_patterns_200_finite_with_progress():
    labels = np.arange(200) % len(BRAVAIS_LATTICES)
    calls: list[int] = []
    x = simulate_patterns(labels, seed=0, progress=calls.append)
    assert x.shape == (200, 2048) and x.dtype == np.float32
    assert np.isfinite(x).all()
    np.testing.assert_allclose(x.max(axis=1), 1.0)
    assert x.min() >= 0.0
    assert sum(calls) == 200
    assert all(0 < c <= 64 for c in calls) and len(calls) >= 3
    # Patterns are not trivially alike.
    assert np.unique(np.argmax(x, axis=1)).size > 50


@pytest.mark.parametrize("intensities", ["random", "structure"])
def test_simulate_patterns_same_in_worker_processes(intensities):
    """Patterns generated by a pool of spawned processes are bit-for-bit those generated in
    this process (each pattern seeded from its index), whatever the order chunks finish in."""
    labels = np.arange(150) % len(BRAVAIS_LATTICES)  # chunks of 64, 64, 22
    here = simulate_patterns(labels, seed=7, intensities=intensities, workers=1)
    calls: list[int] = []
    pooled = simulate_patterns(labels, seed=7, intensities=intensities, workers=2,
                               progress=calls.append)
    np.testing.assert_array_equal(pooled, here)
    assert sorted(calls) == [22, 64, 64]


def test_data_workers_from_environment(monkeypatch):
    from common.errors import DataError
    from datasets.base import DATA_WORKERS_ENV, ROWS_PER_WORKER, data_workers

    monkeypatch.delenv(DATA_WORKERS_ENV, raising=False)
    assert data_workers(ROWS_PER_WORKER - 1) == 1  # too few rows to pay for a pool
    assert 1 <= data_workers(10**6) <= (os.cpu_count() or 1)
    monkeypatch.setenv(DATA_WORKERS_ENV, "3")
    assert data_workers(10) == 3
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv(DATA_WORKERS_ENV, bad)
        with pytest.raises(DataError, match=DATA_WORKERS_ENV):
            data_workers(1000)


def test_simulate_patterns_rejects_bad_labels():
    with pytest.raises(ValueError):
        simulate_patterns(np.array([14]), seed=0)
    with pytest.raises(ValueError):
        simulate_pattern("zz", np.random.default_rng(0))
