"""Synthetic data generation: one process vs a pool of spawned processes, side by side.

    python bench/data_generation.py --samples 2000 --repeats 2

Generates the ``resnet1d`` default data set's XRD patterns (crystal-structure intensities)
in this process and in ``--workers`` processes (default: one per available core, at least 2),
in alternating order, checks the two are bit-for-bit equal and prints patterns/s and the
ratio (median over rounds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.base import data_workers  # noqa: E402
from datasets.xrd_physics import BRAVAIS_LATTICES, simulate_patterns  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=2000, help="patterns per run (2000)")
    p.add_argument("--repeats", type=int, default=2, help="rounds of the two runs (2)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes of the pool (default: one per available core, at least 2)")
    args = p.parse_args()
    workers = args.workers or max(2, data_workers(10**9))  # 10**9 rows: one per core
    labels = np.random.default_rng(0).permutation(np.arange(args.samples)
                                                  % len(BRAVAIS_LATTICES))
    seconds: dict[int, list[float]] = {1: [], workers: []}
    reference = None
    for round_ in range(args.repeats):
        order = [1, workers] if round_ % 2 == 0 else [workers, 1]
        for n in order:
            start = time.perf_counter()
            out = simulate_patterns(labels, 0, intensities="structure", workers=n)
            seconds[n].append(time.perf_counter() - start)
            if reference is None:
                reference = out
            elif not np.array_equal(out, reference):
                sys.exit(f"error: patterns from {n} process(es) differ from the first run's")
    ratios = [a / b for a, b in zip(seconds[1], seconds[workers], strict=True)]
    print(f"XRD generation, {args.samples} patterns, {args.repeats} rounds (alternating order)")
    print("| processes | patterns/s (median) | seconds per round |")
    print("| ---: | ---: | --- |")
    for n, took in seconds.items():
        print(f"| {n} | {args.samples / float(np.median(took)):.0f} | "
              f"{', '.join(f'{t:.1f}' for t in took)} |")
    print(f"speed-up of {workers} processes: {np.median(ratios):.2f}x (median of rounds: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}); patterns identical")


if __name__ == "__main__":
    main()
