"""Sim -> real: the ``resnet1d`` seed configuration trained on synthetic patterns only, scored on
patterns rendered from real crystal structures (datasets/xrd_reference.py, several
instrument settings each), beside its synthetic held-out score; per generator mode
(``--data-option intensities=random|structure``) and over seeds (median and range).

    python bench/xrd_sim_to_real.py --samples 4000 --epochs 9 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import get_dataset  # noqa: E402
from datasets.xrd_physics import BRAVAIS_TO_SYSTEM, PatternGrid  # noqa: E402
from datasets.xrd_reference import REFERENCE_STRUCTURES, write_reference_file  # noqa: E402
from search_spaces import get_space  # noqa: E402
from trainables.loop import FitSettings, StepContext, fit, get_kind  # noqa: E402


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Bravais top-1/top-3 and crystal-system top-1 (probabilities summed per system)."""
    top = np.argsort(-probs, axis=1)
    systems = np.zeros((len(probs), 7))
    np.add.at(systems.T, BRAVAIS_TO_SYSTEM, probs.T)
    return {"bravais_top1": float((top[:, 0] == labels).mean()),
            "bravais_top3": float((top[:, :3] == labels[:, None]).any(1).mean()),
            "system_top1": float((systems.argmax(1) == BRAVAIS_TO_SYSTEM[labels]).mean())}


def run(samples: int, epochs: int, seeds: list[int], modes: list[str], settings: int,
        work: Path) -> dict:
    space = get_space("resnet1d")
    spec = get_dataset(space.dataset)
    grid = PatternGrid()
    real_path = write_reference_file(work / "xrd_reference.h5", settings=settings, grid=grid)
    real = spec.load(spec.prepare(str(real_path), 0, 0, {}), 0, {})
    every = np.arange(len(real.arrays["y"]))
    real_labels = np.asarray(real.arrays["y"])
    results: dict[str, list[dict[str, float]]] = {}
    for mode in modes:
        data = spec.load(spec.prepare(None, samples, 0, {"intensities": mode}), 0, {})
        for seed in seeds:
            started = time.perf_counter()
            metrics = fit(space, dict(space.seed_config), data,
                          FitSettings(max_epochs=epochs, seed=seed, figure_every=0))
            kind = get_kind(space.kind)
            config = dict(space.seed_config)
            cpu = StepContext.create("cpu")
            probs, _ = kind.predict(metrics.model, real, every, config, cpu)
            val_probs, val_labels = kind.predict(metrics.model, data, data.val, config, cpu)
            row = {"seed": seed, "seconds": round(time.perf_counter() - started, 1),
                   "synthetic_val_top1": metrics["val_top1"],
                   **{f"synthetic_{k}": v for k, v in scores(val_probs, val_labels).items()},
                   **{f"real_{k}": v for k, v in scores(probs, real_labels).items()}}
            results.setdefault(mode, []).append(row)
            print(f"{mode:9s} seed {seed}: synthetic val top-1 {row['synthetic_val_top1']:.3f}, "
                  f"real Bravais top-1 {row['real_bravais_top1']:.3f}, real system top-1 "
                  f"{row['real_system_top1']:.3f} ({row['seconds']:.0f} s)", flush=True)
    return {"samples": samples, "epochs": epochs, "seeds": seeds, "settings": settings,
            "real_patterns": int(len(real_labels)), "structures": len(REFERENCE_STRUCTURES),
            "results": results}


def table(report: dict) -> str:
    """Median [min, max] over seeds, one row per generator mode."""
    def cell(rows, key):
        values = np.array([r[key] for r in rows])
        return f"{np.median(values):.3f} [{values.min():.3f}, {values.max():.3f}]"

    lines = [f"seed configuration, {report['samples']} synthetic patterns, {report['epochs']} "
             f"epochs, seeds {report['seeds']}; real set: {report['structures']} structures × "
             f"{report['settings']} instrument settings = {report['real_patterns']} patterns",
             "", "| generator | synthetic val Bravais top-1 | real Bravais top-1 | real Bravais "
             "top-3 | real crystal-system top-1 |", "| --- | ---: | ---: | ---: | ---: |"]
    for mode, rows in report["results"].items():
        lines.append(f"| `intensities={mode}` | {cell(rows, 'synthetic_bravais_top1')} | "
                     f"{cell(rows, 'real_bravais_top1')} | {cell(rows, 'real_bravais_top3')} | "
                     f"{cell(rows, 'real_system_top1')} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=4000, help="synthetic patterns (4000)")
    p.add_argument("--epochs", type=int, default=9, help="training epochs (9)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds (3)")
    p.add_argument("--modes", default="random,structure", help="generator modes to compare")
    p.add_argument("--settings", type=int, default=5, help="instrument settings per structure")
    p.add_argument("--work", default="bench/xrd_sim_to_real_out", help="output folder")
    p.add_argument("--json", default=None, help="write the raw results here")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = run(args.samples, args.epochs, list(range(args.seeds)), args.modes.split(","),
                 args.settings, work)
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
