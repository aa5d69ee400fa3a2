"""Search efficiency on the default ``resnet1d`` synthetic set: best validation top-1 reached
against trial-epochs spent, for

- **grid**: the seed's hand method, a grid of the seed configuration's neighbours
  (``bench/plugins/grid_space.py``), every trial run to full epochs;
- **random**: random search, every trial to full epochs, the grid's budget;
- **TPE+ASHA**: the platform's default, early-stopped trials told to Optuna as PRUNED;
- **TPE+ASHA, pruned told as complete**: the same, telling early-stopped trials as COMPLETE
  with their last value, as Ray's ``OptunaSearch`` does (``--pruned-trials complete``).

Each method is one ``launch.py`` run; the curve is read back from MLflow (every epoch of every
trial, in the order they were logged). Reported: the compute TPE+ASHA needed to match the
grid's best, as a fraction of the grid's trial-epochs (target ≤ 25 %). A picture of the
curves is written beside the table.

    python bench/search_efficiency.py                       # default set, 9 epochs
    python bench/search_efficiency.py --samples 1500 --max-epochs 3 --tpe-trials 12   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID_TRIALS = 9  # the seed and its 8 neighbours


def run_method(tmp: Path, name: str, flags: list[str], args: argparse.Namespace) -> Path:
    """One search through the CLI; returns its MLflow database."""
    db = tmp / f"{name}.db"
    env = dict(os.environ, SCITUNE_PLUGINS="grid_space",
               PYTHONPATH=os.pathsep.join([str(REPO / "bench" / "plugins"), str(REPO)]))
    cmd = [sys.executable, str(REPO / "launch.py"), *flags, "--max-epochs", str(args.max_epochs),
           "--seed", str(args.seed), "--experiment", name, "--storage", str(tmp / "ray"),
           "--mlflow-uri", f"sqlite:///{db}"]
    if args.samples:
        cmd += ["--samples", str(args.samples)]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    print(f"  {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return db


def curve(db: Path, experiment: str, metric: str = "val_top1") -> list[tuple[int, float]]:
    """(trial-epochs spent, best ``metric`` so far) after every logged epoch, in log order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.trial_id != ''",
                              max_results=10000)
    points = []
    for run in runs:
        points += [(m.timestamp, m.step, m.value)
                   for m in client.get_metric_history(run.info.run_id, metric)]
    points.sort()
    best, out = float("-inf"), []
    for spent, (_, _, value) in enumerate(points, 1):
        best = max(best, value)
        out.append((spent, best))
    return out


def trial_curves(db: Path, experiment: str, metric: str = "val_top1") -> list[dict]:
    """Every trial's parameters and per-epoch ``metric``, in the order the trials started."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.trial_id != ''",
                              max_results=10000)
    trials = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        history = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)
        trials.append({"trial_id": run.data.tags.get("trial_id"), "params": run.data.params,
                       "seed": run.data.tags.get("scitune.seed") == "true",
                       "values": [m.value for m in history]})
    return trials


def spent_to_reach(points: list[tuple[int, float]], target: float) -> int | None:
    return next((spent for spent, best in points if best >= target - 1e-12), None)


def plot(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, points in curves.items():
        ax.step([p[0] for p in points], [p[1] for p in points], where="post", label=name)
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("best validation top-1 so far")
    ax.set_title("search efficiency, resnet1d synthetic XRD")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=None, help="synthetic set size (default set)")
    p.add_argument("--max-epochs", type=int, default=9)
    p.add_argument("--tpe-trials", type=int, default=40, help="trials of the TPE+ASHA runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=str(REPO / "bench" / "search_efficiency.png"))
    p.add_argument("--trials-json", default=None,
                   help="also write every trial's parameters and learning curve to this JSON file")
    args = p.parse_args()
    methods = {
        "grid": ["--space", "resnet1d_grid", "--trials", str(GRID_TRIALS), "--searcher", "random",
                 "--scheduler", "fifo"],
        "random": ["--space", "resnet1d", "--trials", str(GRID_TRIALS), "--searcher", "random",
                   "--scheduler", "fifo"],
        "TPE+ASHA": ["--space", "resnet1d", "--trials", str(args.tpe_trials)],
        "TPE+ASHA, pruned told as complete": ["--space", "resnet1d", "--trials",
                                              str(args.tpe_trials), "--pruned-trials", "complete"],
    }
    curves, trials = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, flags) in enumerate(methods.items()):
            experiment = f"m{i}"
            db = run_method(Path(tmp), experiment, flags, args)
            curves[name] = curve(db, experiment)
            trials[name] = trial_curves(db, experiment)
    if args.trials_json:
        Path(args.trials_json).write_text(json.dumps(trials, indent=1))
    grid_best = curves["grid"][-1][1]
    grid_spent = curves["grid"][-1][0]
    print(f"search efficiency: resnet1d, {args.samples or 'default'} samples, up to "
          f"{args.max_epochs} epochs per trial; grid = seed + 8 neighbours (lr ×½/×1/×2, "
          "batch 32/64/128)")
    print("| method | trial-epochs spent | best val top-1 | trial-epochs to reach the grid's best |"
          " ÷ grid's trial-epochs (target ≤ 0.25 for TPE+ASHA) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, points in curves.items():
        reach = spent_to_reach(points, grid_best)
        ratio = "-" if reach is None else f"{reach / grid_spent:.2f}"
        print(f"| {name} | {points[-1][0]} | {points[-1][1]:.3f} | "
              f"{'not reached' if reach is None else reach} | {ratio} |")
    plot(curves, Path(args.plot))
    shown = Path(args.plot)
    print(f"curves: {shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown}")


if __name__ == "__main__":
    main()
