"""The search-efficiency and peer benchmarks' read-outs: pure functions of measured curves."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import peer_optimiser  # noqa: E402
import search_efficiency as eff  # noqa: E402


def test_best_at_a_budget_is_the_best_within_it():
    curve = [(1, 0.1), (2, 0.1), (3, 0.3), (4, 0.3), (5, 0.4)]
    assert eff.best_at(curve, 2.5) == 0.1
    assert eff.best_at(curve, 3) == 0.3
    assert eff.best_at(curve, 100) == 0.4  # a search that ended early keeps its best
    assert eff.best_at(curve, 0.5) is None
    assert eff.spent_to_reach(curve, 0.3) == 3 and eff.spent_to_reach(curve, 0.5) is None


def test_quartiles_and_not_reached():
    assert eff.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
    assert eff.quartiles([0.5, 1.0]) == (0.625, 0.75, 0.875)
    assert eff.fmt_quartiles([0.5, math.inf, math.inf]) == "never [never, never]"
    assert eff.fmt_quartiles([0.5, 0.5, 0.5, math.inf, math.inf]) == "0.50 [0.50, never]"


def test_paired_standard_errors():
    assert eff.paired_se([0.02, 0.03, 0.025, 0.02, 0.03]) == pytest.approx(
        0.025 / (0.005 / math.sqrt(5)))
    assert eff.paired_se([0.01]) is None
    assert eff.paired_se([0.0, 0.0]) == 0.0


def test_table_pairs_each_method_with_the_grid_of_its_repetition():
    grid = [[(1, 0.1), (2, 0.2), (4, 0.2)], [(1, 0.3), (2, 0.3), (4, 0.3)]]
    fast = [[(1, 0.2), (2, 0.3)], [(1, 0.3), (2, 0.32)]]  # each reaches its grid after 1 of 4
    never = [[(1, 0.05), (4, 0.05)], [(1, 0.05), (4, 0.04)]]
    lines = eff.table({"grid": grid, "fast": fast, "never": never})
    # the grid reaches its own best after 2 of 4 and 1 of 4 trial-epochs
    assert lines[2].startswith("| grid | 0.38 [0.31, 0.44] (2/2) | 0.200 ")
    assert lines[3].startswith("| fast | 0.25 [0.25, 0.25] (2/2) | 0.250 [0.225, 0.275] |")
    assert lines[4].startswith("| never | never [never, never] (0/2) |")
    # best at 100 % minus the grid's best: +0.10 and +0.02, mean 0.06, SE 0.04
    assert lines[3].endswith("| +1.5 |") and lines[4].endswith("| -3.7 |")


def test_peer_ledger_tracks_the_incumbent_by_cost():
    ledger = peer_optimiser.Ledger(budget=2.0, optimum=-1.0)
    ledger.pay(0.5)  # a low-fidelity evaluation: no incumbent yet
    ledger.pay(1.0, -0.5)
    ledger.pay(1.0, -0.8)
    assert math.isinf(ledger.regret_at(0.5))
    assert ledger.regret_at(1.6) == pytest.approx(0.5)
    assert ledger.regret_at(3.0) == pytest.approx(0.2) and ledger.done
    assert peer_optimiser.fidelity(1) == 11 and peer_optimiser.fidelity(9) == 100


def test_progress_continues_a_run_and_refuses_other_settings(tmp_path, capsys):
    settings = {"samples": 600, "max_epochs": 2, "tpe_trials": 6, "repetitions": 2,
                "methods": ["grid"]}
    first = eff.Progress(tmp_path, settings)
    assert first.done == {}
    first.record("m0r0", {"method": "grid", "repetition": 0, "seconds": 1.0,
                          "curve": [[1, 0.1], [2, 0.2]], "trials": [], "commit": "abc"})
    again = eff.Progress(tmp_path, settings)
    assert list(again.done) == ["m0r0"] and again.done["m0r0"]["curve"][-1] == [2, 0.2]
    before = (tmp_path / "progress.json").read_text()
    with pytest.raises(SystemExit) as refused:
        eff.Progress(tmp_path, {**settings, "max_epochs": 6})
    assert refused.value.code == 2 and "other settings" in capsys.readouterr().err
    assert (tmp_path / "progress.json").read_text() == before
