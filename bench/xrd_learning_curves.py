"""Learning curves of the ``resnet1d`` seed configuration on synthetic XRD patterns.

For each generator variant and data-set size, the seed configuration trains epoch by epoch
until its validation top-1 stops improving (``--patience`` epochs without a gain of at least
``--min-gain``) or ``--max-epochs``; every epoch's validation top-1/top-3 and train loss is
kept. All sizes of one variant share one generated set: a size-N run trains on the first
``0.7 N`` patterns of that set's train split and every run of the variant is scored on the same
``--val`` patterns of its validation split, so the curves differ only in training data.

A variant is a generator setting (``--data-option`` pairs joined by ``+``), e.g.
``intensities=random`` (the old default) or ``intensities=structure``. Results go to a JSON
file that is extended run by run (an interrupted run is skipped when done, redone when not),
a picture (val top-1 against epoch per size; best val top-1 against size) and a Markdown
table for ``bench/RESULTS.md``.

    python bench/xrd_learning_curves.py --variants intensities=random,intensities=structure \
        --sizes 4000,16000,64000 --max-epochs 40
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from xrd_sim_to_real import scores  # noqa: E402

from datasets import get_dataset  # noqa: E402
from datasets.xrd_physics import PatternGrid  # noqa: E402
from datasets.xrd_reference import write_reference_file  # noqa: E402
from search_spaces import get_space  # noqa: E402
from trainables.loop import FitSettings, StepContext, fit, get_kind  # noqa: E402

TRAIN_FRACTION = 0.7  # datasets.base.split_indices


class Plateau(Exception):
    """Raised from the report callback to end a run whose validation top-1 has plateaued."""


class TimeCap(Exception):
    """Raised from the report callback to end a run that used up its ``--max-minutes``."""


def parse_variant(text: str) -> dict[str, str]:
    """``"a=1+b=2"`` → ``{"a": "1", "b": "2"}`` (empty text: the generator's defaults)."""
    options = {}
    for pair in filter(None, text.split("+")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: variant part {pair!r} is not KEY=VALUE")
        options[key] = value
    return options


def real_set(work: Path, settings: int, length: int):
    """The real-structure reference set (datasets/xrd_reference.py) as loaded splits."""
    spec = get_dataset("xrd")
    path = work / f"xrd_reference_{settings}x{length}.h5"
    if not path.exists():
        write_reference_file(path, settings=settings, grid=PatternGrid(length=length))
    return spec.load(spec.prepare(str(path), 0, 0, {}), 0, {})


def train_curve(options: dict[str, str], size: int, largest: int, seed: int, val_count: int,
                max_epochs: int, patience: int, min_gain: float, real,
                max_minutes: float = float("inf"), progress=None) -> dict:
    """Train the seed configuration on ``size`` patterns; return its per-epoch curve and the
    best epoch's scores on the validation patterns and on the real-structure set ``real``.
    ``progress(curve)`` is called after every epoch (to save a run that is killed)."""
    space = get_space("resnet1d")
    spec = get_dataset(space.dataset)
    data = spec.load(spec.prepare(None, largest, 0, options), 0, options)
    train = data.train[: int(round(TRAIN_FRACTION * size))]
    data = dataclasses.replace(data, train=train, val=data.val[:val_count])
    curve: list[dict[str, float]] = []
    best = {"val_top1": -1.0, "epoch": 0}
    best_weights: dict[str, torch.Tensor] = {}
    started = time.perf_counter()

    def report(metrics: dict[str, float], state: dict) -> None:
        curve.append({k: float(metrics[k]) for k in
                      ("epoch", "val_top1", "val_top3", "val_loss", "train_loss",
                       "epoch_seconds")})
        if metrics["val_top1"] >= best["val_top1"] + min_gain:
            best.update(val_top1=metrics["val_top1"], epoch=int(metrics["epoch"]))
            best_weights.update({k: v.detach().clone() for k, v in state["model"].items()})
        print(f"  epoch {int(metrics['epoch']):3d}: val top-1 {metrics['val_top1']:.3f} "
              f"top-3 {metrics['val_top3']:.3f}  train loss {metrics['train_loss']:.3f} "
              f"({metrics['epoch_seconds']:.0f} s)", flush=True)
        if progress is not None:
            progress(curve)
        if metrics["epoch"] - best["epoch"] >= patience:
            raise Plateau
        if time.perf_counter() - started > 60 * max_minutes:
            raise TimeCap

    try:
        fit(space, dict(space.seed_config), data,
            FitSettings(max_epochs=max_epochs, seed=seed, figure_every=0), report=report)
        stopped = "max_epochs"
    except Plateau:
        stopped = "plateau"
    except TimeCap:
        stopped = "time cap"
    top1 = [row["val_top1"] for row in curve]
    at = {e: top1[e - 1] for e in (9,) if len(top1) >= e}
    config = dict(space.seed_config)
    model = space.build(config, data.info)
    model.load_state_dict(best_weights)
    kind, cpu = get_kind(space.kind), StepContext.create("cpu")
    val_probs, val_labels = kind.predict(model, data, data.val, config, cpu)
    synthetic = scores(val_probs, val_labels)
    confusion = np.zeros((data.info.num_classes,) * 2, dtype=int)
    np.add.at(confusion, (val_labels, val_probs.argmax(1)), 1)
    every = np.arange(len(real.arrays["y"]))
    on_real = scores(*kind.predict(model, real, every, config, cpu))
    print(f"  best epoch {best['epoch']}: val Bravais {synthetic['bravais_top1']:.3f}, system "
          f"{synthetic['system_top1']:.3f}; real Bravais {on_real['bravais_top1']:.3f}, "
          f"system {on_real['system_top1']:.3f}", flush=True)
    return {"val_confusion": confusion.tolist(),  # rows: true class, columns: predicted
            **{f"val_{k}": v for k, v in synthetic.items()},
            **{f"real_{k}": v for k, v in on_real.items()},
            "size": size, "train_patterns": len(train), "val_patterns": len(data.val),
            "seed": seed, "stopped": stopped, "epochs": len(curve),
            "best_val_top1": max(top1), "best_epoch": int(np.argmax(top1)) + 1,
            "val_top1_at_epoch_9": at.get(9), "seconds": round(time.perf_counter() - started),
            "curve": curve}


def table(results: dict[str, list[dict]]) -> str:
    """Markdown: one row per variant and size, median [min, max] over seeds."""
    def cell(rows: list[dict], key: str) -> str:
        values = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
        if not len(values):
            return "–"
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{np.median(values):.3f} [{values.min():.3f}, {values.max():.3f}]"

    lines = ["| generator | patterns (train) | seeds | val top-1 at epoch 9 | best val top-1 | "
             "epoch of best | epochs run (stop) | minutes | val crystal-system top-1 | "
             "real Bravais top-1 | real Bravais top-3 | real crystal-system top-1 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for variant, rows in results.items():
        for size in sorted({r["size"] for r in rows}):
            runs = [r for r in rows if r["size"] == size]
            stops = ",".join(sorted({r["stopped"] for r in runs}))
            epochs = "/".join(str(r["epochs"]) for r in runs)
            minutes = "/".join(f"{r['seconds'] / 60:.0f}" for r in runs)
            lines.append(
                f"| `{variant or 'defaults'}` | {size} ({runs[0]['train_patterns']}) | "
                f"{len(runs)} | {cell(runs, 'val_top1_at_epoch_9')} | "
                f"{cell(runs, 'best_val_top1')} | {'/'.join(str(r['best_epoch']) for r in runs)} | "
                f"{epochs} ({stops}) | {minutes} | {cell(runs, 'val_system_top1')} | "
                f"{cell(runs, 'real_bravais_top1')} | {cell(runs, 'real_bravais_top3')} | "
                f"{cell(runs, 'real_system_top1')} |")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    """Top row: val top-1 against epoch, one panel per variant, and best val top-1 against
    size. Bottom row: train loss against epoch (a loss that keeps falling while val top-1 is
    flat is a model memorising too little data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(results)
    columns = len(variants) + 1
    fig, axes = plt.subplots(2, columns, figsize=(4.2 * columns, 6.6), squeeze=False)
    sizes = sorted({r["size"] for rows in results.values() for r in rows})
    colours = dict(zip(sizes, plt.cm.viridis(np.linspace(0.1, 0.85, len(sizes))), strict=True))
    for column, variant in enumerate(variants):
        top, bottom = axes[0][column], axes[1][column]
        for r in results[variant]:
            epochs = [c["epoch"] for c in r["curve"]]
            label = f"{r['size']} (seed {r['seed']})"
            top.plot(epochs, [c["val_top1"] for c in r["curve"]], color=colours[r["size"]],
                     label=label, lw=1.2)
            bottom.plot(epochs, [c["train_loss"] for c in r["curve"]],
                        color=colours[r["size"]], label=label, lw=1.2)
        top.axhline(1 / 14, color="grey", ls=":", lw=1)
        for ax in (top, bottom):
            ax.axvline(9, color="grey", ls="--", lw=0.8)
        top.set(title=variant or "defaults", ylabel="val Bravais top-1", ylim=(0, 1))
        bottom.axhline(np.log(14), color="grey", ls=":", lw=1)
        bottom.set(xlabel="epoch (dashed: default --max-epochs)", ylabel="train loss",
                   ylim=(0, None))
        top.legend(fontsize=7)
    ax = axes[0][-1]
    for variant in variants:
        rows = [r for r in results[variant] if r["curve"]]
        xs = sorted({r["size"] for r in rows})
        best = [np.median([max(c["val_top1"] for c in r["curve"]) for r in rows
                           if r["size"] == s]) for s in xs]
        ax.plot(xs, best, "o-", label=variant or "defaults")
        real = [np.median([r["real_bravais_top1"] for r in rows if r["size"] == s
                           and r.get("real_bravais_top1") is not None] or [np.nan]) for s in xs]
        ax.plot(xs, real, "s--", color=ax.lines[-1].get_color(), alpha=0.7,
                label=f"{variant or 'defaults'}: real structures")
    ax.axhline(1 / 14, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s / 1000:g}k" for s in sizes])
    ax.minorticks_off()
    ax.set(xlabel="synthetic patterns (70 % train)",
           ylabel="Bravais top-1 of the best epoch", title="against data (dotted: chance)",
           ylim=(0, 1))
    ax.legend(fontsize=7)
    axes[1][-1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="intensities=random,intensities=structure",
                   help="comma-separated generator variants, each KEY=VALUE[+KEY=VALUE]")
    p.add_argument("--sizes", default="4000,16000,64000",
                   help="data-set sizes (--samples), 70 %% of each trains (4000,16000,64000)")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per run (1)")
    p.add_argument("--pool", type=int, default=None,
                   help="size of the generated set every size draws from (the largest size); "
                        "keep it when adding seeds or sizes to an earlier run")
    p.add_argument("--val", type=int, default=3000,
                   help="validation patterns, the same for every size of a variant (3000)")
    p.add_argument("--max-epochs", type=int, default=40, help="epoch cap per run (40)")
    p.add_argument("--patience", type=int, default=5,
                   help="stop after this many epochs without a val top-1 gain (5)")
    p.add_argument("--min-gain", type=float, default=0.005,
                   help="smallest val top-1 gain that counts as progress (0.005)")
    p.add_argument("--max-minutes", type=float, default=float("inf"),
                   help="end a run after the epoch that passes this many minutes (no cap)")
    p.add_argument("--settings", type=int, default=5,
                   help="instrument settings per real structure in the real-structure set (5)")
    p.add_argument("--out", default="bench/xrd_learning_curves",
                   help="output prefix: PREFIX.json, PREFIX.png (bench/xrd_learning_curves)")
    p.add_argument("--plot-only", action="store_true",
                   help="redraw the picture and print the table from the JSON file, train nothing")
    args = p.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    largest = args.pool or max(sizes)
    if largest < max(sizes):
        raise SystemExit(f"error: --pool {largest} is smaller than size {max(sizes)}")
    if args.val > 0.15 * largest:
        raise SystemExit(f"error: --val {args.val} exceeds the validation split of the "
                         f"largest size ({int(0.15 * largest)}); lower --val")
    out = Path(args.out)
    json_path = out.with_suffix(".json")
    results: dict[str, list[dict]] = (json.loads(json_path.read_text())
                                      if json_path.exists() else {})
    if args.plot_only:
        plot(results, out.with_suffix(".png"))
        print(table(results))
        return
    for variant in args.variants.split(","):
        options = parse_variant(variant)
        real = real_set(out.parent, args.settings, int(options.get("length", 2048)))
        for size in sizes:
            for seed in range(args.seeds):
                rows = results.setdefault(variant, [])
                if any(r["size"] == size and r["seed"] == seed and r["stopped"] != "killed"
                       for r in rows):
                    continue
                rows[:] = [r for r in rows if not (r["size"] == size and r["seed"] == seed)]
                print(f"{variant or 'defaults'}: {size} patterns, seed {seed}", flush=True)
                partial = {"size": size, "seed": seed, "stopped": "killed", "epochs": 0,
                           "train_patterns": int(round(TRAIN_FRACTION * size)), "curve": [],
                           "seconds": 0, "best_val_top1": None}
                rows.append(partial)

                def save(curve: list[dict], partial: dict = partial) -> None:
                    top1 = [c["val_top1"] for c in curve]
                    partial.update(curve=curve, epochs=len(curve), best_val_top1=max(top1),
                                   best_epoch=int(np.argmax(top1)) + 1,
                                   val_top1_at_epoch_9=top1[8] if len(top1) > 8 else None,
                                   seconds=round(sum(c["epoch_seconds"] for c in curve)))
                    json_path.write_text(json.dumps(results, indent=1) + "\n")

                row = train_curve(options, size, largest, seed, args.val, args.max_epochs,
                                  args.patience, args.min_gain, real, args.max_minutes, save)
                rows[rows.index(partial)] = row
                json_path.write_text(json.dumps(results, indent=1) + "\n")
                plot(results, out.with_suffix(".png"))
    print(table(results))


if __name__ == "__main__":
    main()
