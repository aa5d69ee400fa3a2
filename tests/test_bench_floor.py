"""The search-efficiency floor analysis (``bench/search_floor.py``): pure functions of curves."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import search_floor  # noqa: E402


def test_first_reach_is_the_first_epoch_at_or_above_the_target():
    assert search_floor.first_reach([0.1, 0.2, 0.15, 0.3], 0.2) == 2
    assert search_floor.first_reach([0.1, 0.15], 0.2) is None


def test_a_sure_hit_costs_its_epochs_plus_the_seeds_beside_it():
    rng = random.Random(0)
    # the seed (9 epochs) and one proposal that reaches the target after 6 run in lockstep
    assert search_floor.simulate(1.0, 9, [6], [1], rng) == 12
    # a short seed: its slot takes another proposal (a sure hit too) when it ends
    assert search_floor.simulate(1.0, 2, [6], [1], rng) == 12


def test_misses_add_their_cost_before_the_hit():
    rng = random.Random(0)
    costs = [search_floor.simulate(0.2, 1, [3], [2], rng) for _ in range(2000)]
    assert min(costs) >= 4  # the seed's one epoch and a three-epoch hit, at best
    assert sum(costs) / len(costs) > 8  # about four misses of two epochs each come first


def test_report_from_a_trials_file(tmp_path):
    grid = [{"seed": True, "values": [0.1, 0.2]}, {"seed": False, "values": [0.1, 0.3]}]
    tpe = [{"seed": True, "values": [0.1, 0.2]}, {"seed": False, "values": [0.3]},
           {"seed": False, "values": [0.1]}]
    path = tmp_path / "trials.json"
    path.write_text(json.dumps({"grid": grid, "random": grid, "TPE+ASHA": tpe}))
    out = subprocess.run([sys.executable, str(REPO / "bench" / "search_floor.py"), str(path),
                          "--draws", "200"], capture_output=True, text=True, check=True).stdout
    assert "grid's best val top-1 0.300 after 4 trial-epochs" in out
    assert "| TPE+ASHA | 2 | 1 (50%) | 1 |" in out
    assert "oracle (the first proposal reaches it, seed beside it in lockstep): 2 trial-epochs" in out
