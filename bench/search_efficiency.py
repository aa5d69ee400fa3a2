"""Search efficiency on the default ``resnet1d`` synthetic set, repeated over seeds: best
validation top-1 reached against trial-epochs spent, for

- **grid**: the seed's hand method, a grid of the seed configuration's neighbours
  (``bench/plugins/grid_space.py``), every trial run to full epochs;
- **random**: random search, every trial to full epochs, the grid's budget;
- **TPE+ASHA**: the platform's searcher without prior knowledge (``--prior none``);
- **TPE+ASHA, seed prior**: the platform's default (``--prior seed``);
- **TPE+ASHA, bad prior**: a prior centred on a deliberately poor configuration
  (``bench/plugins/bad_prior.yaml``: the smallest network, the lowest learning rate, the largest
  batch, the most dropout and background);
- **TPE+ASHA, warm start**: ``--prior none --warm-start`` from the TPE+ASHA search of the next
  repetition (another seed: other data, other initialisations), so no extra search is run;
- **TPE+Hyperband, seed prior**: ``--scheduler hyperband`` with the default prior.

Each repetition ``r`` uses ``--seed r`` for every method (the synthetic set, the searcher and
the trials' initialisation all follow it), so methods are compared on the same data within a
repetition. Every search is one ``launch.py`` run; its anytime curve (best so far after every
logged epoch, in log order) is read back from MLflow.

Reported, over repetitions (median and interquartile range): trial-epochs to reach the grid's
best of the same repetition, as a fraction of the grid's trial-epochs (target ≤ 0.25 with the
seed prior); the best value after 25 %, 50 % and 100 % of the grid's trial-epochs; and the
paired difference of the best at the grid's budget against the grid's best, in standard
errors (target > 2). A picture of the median anytime curves with interquartile bands is
written beside the table.

    python bench/search_efficiency.py              # full: 5 repetitions, about 3 h on 2 cores
    python bench/search_efficiency.py --quick      # small set, 2 repetitions, < 10 min
    python bench/search_efficiency.py --work DIR   # keep the searches in DIR; calling it again
                                                   # with the same DIR continues a stopped run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
GRID_TRIALS = 9  # the seed and its 8 neighbours
FRACTIONS = (0.25, 0.5, 1.0)
TPE = "TPE+ASHA"
SEED_PRIOR = "TPE+ASHA, seed prior"
WARM = "TPE+ASHA, warm start"


def methods(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each method's flags (the warm start's source is filled in per repetition)."""
    tpe = ["--space", "resnet1d", "--trials", str(args.tpe_trials)]
    return {
        "grid": ["--space", "resnet1d_grid", "--trials", str(GRID_TRIALS), "--searcher",
                 "random", "--scheduler", "fifo", "--prior", "none"],
        "random": ["--space", "resnet1d", "--trials", str(GRID_TRIALS), "--searcher", "random",
                   "--scheduler", "fifo", "--prior", "none"],
        TPE: [*tpe, "--prior", "none"],
        SEED_PRIOR: [*tpe, "--prior", "seed"],
        "TPE+ASHA, bad prior": [*tpe, "--prior", str(HERE / "plugins" / "bad_prior.yaml")],
        WARM: [*tpe, "--prior", "none", "--warm-start", "{earlier}"],
        "TPE+Hyperband, seed prior": [*tpe, "--prior", "seed", "--scheduler", "hyperband"],
    }


class Progress:
    """The finished searches of a run (``progress.json`` in the work folder), so that an
    interrupted run continues where it stopped when called again with the same ``--work``."""

    def __init__(self, work: Path, settings: dict) -> None:
        self.path = work / "progress.json"
        self.settings = settings
        self.done: dict[str, dict] = {}
        work.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            stored = json.loads(self.path.read_text())
            if stored["settings"] != settings:
                print(f"error: {work} holds a run with other settings {stored['settings']}; "
                      "use another --work or the same settings", file=sys.stderr)
                raise SystemExit(2)
            self.done = stored["done"]
            print(f"continuing the run in {work}: {len(self.done)} searches done",
                  file=sys.stderr, flush=True)

    def record(self, experiment: str, result: dict) -> None:
        self.done[experiment] = result
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(json.dumps({"settings": self.settings, "done": self.done}))
        os.replace(partial, self.path)


def commit() -> str:
    """The repository's commit (short), for the record of each search."""
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def run_method(tmp: Path, db: Path, experiment: str, flags: list[str], seed: int,
               args: argparse.Namespace) -> float:
    """One search through the CLI (every method of a run shares one MLflow store, so a warm
    start finds the earlier search); returns its wall seconds. A search an interrupted run
    left behind is continued with ``--resume``."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tracking.state import state_path

    env = dict(os.environ, SCITUNE_PLUGINS="grid_space",
               PYTHONPATH=os.pathsep.join([str(HERE / "plugins"), str(REPO)]))
    where = ["--experiment", experiment, "--storage", str(tmp / "ray")]
    if state_path(tmp / "ray", experiment).exists():  # the search keeps its stored settings
        cmd = [sys.executable, str(REPO / "launch.py"), "--resume", *where]
    else:
        cmd = [sys.executable, str(REPO / "launch.py"), *flags, *where, "--max-epochs",
               str(args.max_epochs), "--seed", str(seed), "--mlflow-uri", f"sqlite:///{db}",
               "--samples", str(args.samples)]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{experiment} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    seconds = time.perf_counter() - start
    print(f"  {experiment}: {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


def read_search(db: Path, experiment: str, metric: str = "val_top1"
                ) -> tuple[list[tuple[int, float]], list[dict]]:
    """The anytime curve ``[(trial-epochs spent, best so far), ...]`` (every logged epoch of
    every trial, in log order) and every trial's parameters and per-epoch values."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.trial_id != ''",
                              max_results=10000)
    points, trials = [], []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        history = sorted(client.get_metric_history(run.info.run_id, metric),
                         key=lambda m: m.step)
        points += [(m.timestamp, m.step, m.value) for m in history]
        trials.append({"trial_id": run.data.tags.get("trial_id"), "params": run.data.params,
                       "seed": run.data.tags.get("scitune.seed") == "true",
                       "values": [m.value for m in history]})
    points.sort()
    best, curve = float("-inf"), []
    for spent, (_, _, value) in enumerate(points, 1):
        if math.isfinite(value):
            best = max(best, value)
        curve.append((spent, best))
    return curve, trials


def best_at(curve: list[tuple[int, float]], budget: float) -> float | None:
    """Best so far after at most ``budget`` trial-epochs (a search that ended earlier keeps its
    final best: more budget could only have raised it); None before its first epoch."""
    within = [best for spent, best in curve if spent <= budget + 1e-9]
    return within[-1] if within and math.isfinite(within[-1]) else None


def spent_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((spent for spent, best in curve if best >= target - 1e-12), None)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile), linear between order statistics; inf
    stands for "not reached" and wins any interpolation it takes part in."""
    ordered = sorted(values)

    def at(q: float) -> float:
        x = q * (len(ordered) - 1)
        lo, hi = ordered[math.floor(x)], ordered[math.ceil(x)]
        if math.isinf(lo) or math.isinf(hi):
            return hi if math.isinf(hi) else lo
        return lo + (hi - lo) * (x - math.floor(x))

    return at(0.25), at(0.5), at(0.75)


def fmt_quartiles(values: list[float], digits: int = 2) -> str:
    q1, med, q3 = quartiles(values)

    def f(x: float) -> str:
        return "never" if math.isinf(x) else f"{x:.{digits}f}"

    return f"{f(med)} [{f(q1)}, {f(q3)}]"


def paired_se(diffs: list[float]) -> float | None:
    """Mean of paired differences in standard errors (None for fewer than 2 pairs)."""
    if len(diffs) < 2:
        return None
    sd = statistics.stdev(diffs)
    mean = statistics.mean(diffs)
    if sd < 1e-9:  # identical differences (up to rounding)
        return math.copysign(math.inf, mean) if mean else 0.0
    return mean / (sd / math.sqrt(len(diffs)))


def table(curves: dict[str, list[list[tuple[int, float]]]]) -> list[str]:
    """The Markdown table of the report (see the module doc)."""
    grids = curves["grid"]
    budgets = [g[-1][0] for g in grids]
    targets = [g[-1][1] for g in grids]
    lines = ["| method | ÷ grid's trial-epochs to reach the grid's best: median [IQR] "
             "(reached) | " + " | ".join(f"best at {int(f * 100)} %" for f in FRACTIONS)
             + " | best at 100 % − grid's best, in SE |",
             "| --- | ---: |" + " ---: |" * len(FRACTIONS) + " ---: |"]
    for name, runs in curves.items():
        ratios, reached = [], 0
        for curve, budget, target in zip(runs, budgets, targets, strict=True):
            spent = spent_to_reach(curve, target)
            reached += spent is not None
            ratios.append(math.inf if spent is None else spent / budget)
        cells = []
        for fraction in FRACTIONS:
            values = [best_at(c, fraction * b) for c, b in zip(runs, budgets, strict=True)]
            known = [v for v in values if v is not None]
            cells.append(fmt_quartiles(known, 3) if known else "-")
        finals = [best_at(c, b) for c, b in zip(runs, budgets, strict=True)]
        diffs = [f - t for f, t in zip(finals, targets, strict=True) if f is not None]
        se = paired_se(diffs) if name != "grid" else None
        lines.append(f"| {name} | {fmt_quartiles(ratios)} ({reached}/{len(runs)}) | "
                     + " | ".join(cells) + f" | {'-' if se is None else f'{se:+.1f}'} |")
    return lines


def plot(curves: dict[str, list[list[tuple[int, float]]]], path: Path, title: str) -> None:
    """Median anytime curve of each method over repetitions, with the interquartile band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    budget = statistics.median(g[-1][0] for g in curves["grid"])
    horizon = int(max(c[-1][0] for runs in curves.values() for c in runs))
    xs = np.arange(1, horizon + 1)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, runs in curves.items():
        grid = np.full((len(runs), len(xs)), np.nan)
        for i, curve in enumerate(runs):
            spent = np.array([p[0] for p in curve])
            best = np.array([p[1] for p in curve])
            idx = np.searchsorted(spent, xs, side="right") - 1
            row = np.where(idx >= 0, best[np.clip(idx, 0, None)], np.nan)  # an ended search
            row[~np.isfinite(row)] = np.nan  # keeps its final best, as in the table
            grid[i] = row
        ends = sorted(c[-1][0] for c in runs)
        alive = xs <= ends[len(ends) // 2]  # drawn up to the median search's end
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(grid, axis=0)
                q1, q3 = np.nanpercentile(grid, 25, axis=0), np.nanpercentile(grid, 75, axis=0)
        style = {"lw": 2.2} if name in ("grid", SEED_PRIOR) else {"lw": 1.4}
        (line,) = ax.step(xs[alive], med[alive], where="post", label=name, **style)
        ax.fill_between(xs[alive], q1[alive], q3[alive], step="post", alpha=0.15,
                        color=line.get_color())
    for fraction in FRACTIONS:
        ax.axvline(fraction * budget, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("trial-epochs spent (dotted: 25 / 50 / 100 % of the grid's)")
    ax.set_ylabel("best validation top-1 so far")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="600 patterns, 2 epochs, 6 TPE trials, 2 repetitions (< 10 min)")
    p.add_argument("--samples", type=int, default=4000, help="synthetic set size (4000)")
    p.add_argument("--max-epochs", type=int, default=6, help="epochs of a full trial (6)")
    p.add_argument("--tpe-trials", type=int, default=16,
                   help="trials of each TPE search: under ASHA about 0.85 of the grid's "
                        "trial-epochs, so every comparison at the grid's budget is fair to "
                        "the grid (16)")
    p.add_argument("--repetitions", type=int, default=5, help="seeds 0..N-1 (5)")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset of the methods (default: all)")
    p.add_argument("--plot", default=None, help="picture (bench/search_efficiency[_quick].png)")
    p.add_argument("--curves-json", default=None,
                   help="also write every repetition's curves and trials to this JSON file")
    p.add_argument("--trials-json", default=None,
                   help="the first repetition's trials per method, for bench/search_floor.py")
    p.add_argument("--work", default=None, metavar="DIR",
                   help="keep the searches and their progress in DIR; calling again with the "
                        "same DIR continues an interrupted run (default: a temporary folder)")
    p.add_argument("--from-json", default=None, metavar="CURVES.json",
                   help="no searches: print the table and draw the picture of a --curves-json "
                        "file")
    args = p.parse_args()
    if args.from_json:
        curves = json.loads(Path(args.from_json).read_text())["curves"]
        curves = {k: [[tuple(point) for point in c] for c in runs] for k, runs in curves.items()}
        print("\n".join(table(curves)))
        plot(curves, Path(args.plot or HERE / "search_efficiency.png"),
             f"resnet1d synthetic XRD: median and IQR over {len(curves['grid'])} seeds")
        return
    if args.quick:
        args.samples, args.max_epochs, args.tpe_trials, args.repetitions = 600, 2, 6, 2
    plot_path = Path(args.plot or HERE / f"search_efficiency{'_quick' if args.quick else ''}.png")
    chosen = methods(args)
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",")]
        unknown = [m for m in wanted if m not in chosen]
        if unknown:
            raise SystemExit(f"unknown method(s) {unknown}; choose from {list(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in wanted or k == "grid"}
        if WARM in chosen and TPE not in chosen:
            chosen[TPE] = methods(args)[TPE]
    reps = list(range(args.repetitions))
    if WARM in chosen and len(reps) < 2:
        raise SystemExit("the warm start needs --repetitions 2 or more")
    curves: dict[str, list] = {name: [] for name in chosen}
    trials: dict[str, list] = {name: [] for name in chosen}
    seconds: dict[str, float] = {name: 0.0 for name in chosen}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work).resolve() if args.work else Path(tmp)
        progress = Progress(work, {"samples": args.samples, "max_epochs": args.max_epochs,
                                   "tpe_trials": args.tpe_trials, "repetitions": len(reps),
                                   "methods": list(chosen)})
        db = work / "bench.db"
        for m, (name, flags) in enumerate(chosen.items()):
            for r in reps:
                experiment = f"m{m}r{r}"
                if experiment not in progress.done:
                    earlier = f"m{list(chosen).index(TPE)}r{(r + 1) % len(reps)}" \
                        if TPE in chosen else ""
                    filled = [f.format(earlier=earlier) for f in flags]
                    spent = run_method(work, db, experiment, filled, r, args)
                    curve, tried = read_search(db, experiment)
                    progress.record(experiment, {"method": name, "repetition": r,
                                                 "seconds": spent, "curve": curve,
                                                 "trials": tried, "commit": commit()})
                done = progress.done[experiment]
                seconds[name] += done["seconds"]
                curves[name].append([tuple(point) for point in done["curve"]])
                trials[name].append(done["trials"])
    commits = sorted({d["commit"] for d in progress.done.values()})
    print(f"search efficiency: resnet1d, {args.samples} patterns, up to {args.max_epochs} epochs "
          f"per trial, {len(reps)} repetitions (seeds {reps[0]}..{reps[-1]}); grid = seed + 8 "
          f"neighbours (lr ×½/×1/×2, batch 32/64/128); TPE searches: {args.tpe_trials} trials")
    grid_best = [c[-1][1] for c in curves["grid"]]
    print(f"grid's best per repetition: {', '.join(f'{v:.3f}' for v in grid_best)}; "
          f"grid's trial-epochs: {', '.join(str(c[-1][0]) for c in curves['grid'])}")
    print("\n".join(table(curves)))
    spent = {name: [c[-1][0] for c in runs] for name, runs in curves.items()}
    print("trial-epochs each search spent in all (median): "
          + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in spent.items()))
    print(f"commit{'s' if len(commits) > 1 else ''}: {', '.join(commits)}")
    print(f"wall time of this call: {time.perf_counter() - started:.0f} s; of the searches: ("
          + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ")")
    plot(curves, plot_path, f"resnet1d synthetic XRD ({args.samples} patterns): median and IQR "
         f"over {len(reps)} seeds")
    shown = plot_path
    print(f"curves: {shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown}")
    if args.curves_json:
        Path(args.curves_json).write_text(json.dumps({"curves": curves, "trials": trials},
                                                     indent=1))
    if args.trials_json:
        Path(args.trials_json).write_text(json.dumps(
            {name: runs[0] for name, runs in trials.items()}, indent=1))


if __name__ == "__main__":
    main()
