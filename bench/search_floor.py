"""How small can TPE+ASHA's compute to match the grid's best be? An analysis of the learning
curves ``bench/search_efficiency.py --trials-json`` kept (no training here).

From the measured curves it reports, per method, how many configurations ever reach the grid's
best top-1 and after how many epochs, and then a simulation built only from those measurements:
two slots run in lockstep; one slot runs the seed first for as many epochs as the seed ran in
the TPE+ASHA search; every other proposal either reaches the target (probability ``p``, after
one of the measured epoch counts of configurations that did) or costs what a measured
configuration that did not reach it cost under ASHA. Hits are assumed never stopped by ASHA,
so the simulated compute is a lower bound for that ``p``. It prints the chance of matching the
grid within the target budget (25 % of the grid's trial-epochs) for the hit rates measured in
the random leg (the space's prior), in TPE's proposals, and for a range of ``p``.

    python bench/search_floor.py bench/search_efficiency_trials.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

TPE = "TPE+ASHA"


def first_reach(values: list[float], target: float) -> int | None:
    """Epoch (1-based) at which a learning curve first reaches ``target``."""
    return next((i for i, v in enumerate(values, 1) if v >= target - 1e-12), None)


def simulate(p: float, seed_epochs: int, hit_epochs: list[int], miss_costs: list[int],
             rng: random.Random) -> int:
    """Trial-epochs spent by two lockstep slots until a proposal reaches the target."""
    slots = [seed_epochs, 0]  # epochs left in the job each slot runs; slot 0 starts with the seed
    ends_in_hit = [False, False]
    spent = 0
    for _ in range(100_000):
        for s in (0, 1):
            if slots[s] == 0:
                hit = rng.random() < p
                ends_in_hit[s] = hit
                slots[s] = rng.choice(hit_epochs) if hit else rng.choice(miss_costs)
        for s in (0, 1):
            slots[s] -= 1
            spent += 1
            if slots[s] == 0 and ends_in_hit[s]:
                return spent
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trials_json", type=Path)
    ap.add_argument("--budget", type=float, default=0.25, help="target, as a fraction of the grid's")
    ap.add_argument("--draws", type=int, default=20_000)
    args = ap.parse_args()
    data = json.loads(args.trials_json.read_text())
    grid = data["grid"]
    target = max(max(t["values"]) for t in grid if t["values"])
    grid_spent = sum(len(t["values"]) for t in grid)
    budget = args.budget * grid_spent
    print(f"grid's best val top-1 {target:.3f} after {grid_spent} trial-epochs; target budget "
          f"{args.budget:.2f} x {grid_spent} = {budget:.0f} trial-epochs")
    print("| method | configurations (not the seed) | reach the grid's best | after epochs |")
    print("| --- | ---: | ---: | --- |")
    rates = {}
    for name, trials in data.items():
        others = [t for t in trials if not t["seed"]]
        reach = sorted(e for t in others if (e := first_reach(t["values"], target)) is not None)
        rates[name] = len(reach) / max(len(others), 1)
        print(f"| {name} | {len(others)} | {len(reach)} ({rates[name]:.0%}) | "
              f"{', '.join(map(str, reach)) or '-'} |")
    tpe = data[TPE]
    others = [t for t in tpe if not t["seed"]]
    hit_epochs = [e for t in others if (e := first_reach(t["values"], target)) is not None]
    miss_costs = [len(t["values"]) for t in others
                  if t["values"] and first_reach(t["values"], target) is None]
    seed_epochs = next(len(t["values"]) for t in tpe if t["seed"])
    if not hit_epochs:
        print("no TPE+ASHA configuration reached the grid's best: nothing to simulate")
        return
    n_miss = len(miss_costs)
    miss_costs = miss_costs or [1]  # every configuration reached it: misses never drawn at p=1
    misses = (f"the others cost {statistics.mean(miss_costs):.2f} trial-epochs each under ASHA "
              f"(n={n_miss})" if n_miss else "every one reached it")
    print(f"\nTPE+ASHA measurements used: the seed ran {seed_epochs} epochs; configurations that "
          f"reached the target needed {min(hit_epochs)}-{max(hit_epochs)} epochs "
          f"(median {statistics.median(hit_epochs):g}); {misses}.")
    print(f"oracle (the first proposal reaches it, seed beside it in lockstep): "
          f"{2 * min(hit_epochs)} trial-epochs = {2 * min(hit_epochs) / grid_spent:.2f} of the grid's")
    print("\n| hit rate p of a proposal | median trial-epochs to match | ÷ grid's | "
          f"P(≤ {args.budget:.2f} of the grid's) |")
    print("| --- | ---: | ---: | ---: |")
    rng = random.Random(0)
    labelled = [(f"{rates.get('random', 0):.0%} (random leg: the space's prior)",
                 rates.get("random", 0.0)), (f"{rates[TPE]:.0%} (TPE's proposals)", rates[TPE])]
    labelled += [(f"{p:.0%}", p) for p in (0.5, 0.75, 1.0)]
    for label, p in labelled:
        if p <= 0:
            print(f"| {label} | never | - | 0 |")
            continue
        runs = [simulate(p, seed_epochs, hit_epochs, miss_costs, rng) for _ in range(args.draws)]
        med = statistics.median(runs)
        within = sum(r <= budget for r in runs) / len(runs)
        print(f"| {label} | {med:g} | {med / grid_spent:.2f} | {within:.0%} |")


if __name__ == "__main__":
    main()
