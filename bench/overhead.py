"""Platform overhead: the same sleeping trainable through plain Optuna, Ray Tune with its
defaults, and this platform (Optuna searcher, ASHA, MLflow, checkpoints all on).

Each system runs as its own process, timed from start to exit (what a user waits for), one
after the other in one run. A trial reports ``--reports`` times, sleeping
``trial_seconds / reports`` before each report; early stopping is Optuna's
SuccessiveHalvingPruner for (a) and ASHA for (b) and (c), both with reduction factor 3 and a
grace of one report. Ideal = total sleep actually done / concurrency.

``--systems`` picks the systems (the first is the baseline). ``platform-warm`` is (c) joining a
Ray that is already running (``--address``), as on a cluster: Ray's own start is not timed.

    python bench/overhead.py --trials 200 --trial-seconds 1 --concurrency 2
    python bench/overhead.py --trials 200 --trial-seconds 1 --systems optuna,platform,platform-warm
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
sys.path.insert(0, str(REPO / "bench" / "plugins"))
sys.path.insert(0, str(REPO))


def objective(x: float, step: int) -> float:
    """Same as ``sleep_space.objective`` (inlined: Ray workers pickle this by value)."""
    return (1.0 - (x - 0.3) ** 2) * (1.0 - 0.5 ** step)


def run_optuna(args: argparse.Namespace) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pause = args.trial_seconds / args.reports
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))

    def trial_fn(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_float("lr", 1e-3, 1e-2, log=True)
        value = 0.0
        for step in range(1, args.reports + 1):
            time.sleep(pause)
            value = objective(x, step)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    study.optimize(trial_fn, n_trials=args.trials, n_jobs=args.concurrency)
    steps = sum(len(t.intermediate_values) for t in study.trials)
    return {"steps": steps}


def tune_trainable(config: dict) -> None:
    from ray import tune

    for step in range(1, config["reports"] + 1):
        time.sleep(config["pause"])
        tune.report({"score": objective(config["x"], step)})


def run_tune(args: argparse.Namespace) -> dict:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    ray.init(address="local", num_cpus=args.concurrency, include_dashboard=False,
             logging_level="ERROR")
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune_trainable,
            param_space={"x": tune.uniform(0.0, 1.0), "lr": tune.loguniform(1e-3, 1e-2),
                         "reports": args.reports, "pause": args.trial_seconds / args.reports},
            tune_config=tune.TuneConfig(
                metric="score", mode="max", num_samples=args.trials,
                search_alg=OptunaSearch(seed=0),
                scheduler=ASHAScheduler(max_t=args.reports, grace_period=1, reduction_factor=3),
                max_concurrent_trials=args.concurrency),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        results = tuner.fit()
        steps = sum(int(r.metrics.get("training_iteration", 0)) for r in results)
    ray.shutdown()
    return {"steps": steps}


def platform_env(args: argparse.Namespace) -> dict:
    return dict(os.environ, SCITUNE_PLUGINS="sleep_space",
                SCITUNE_BENCH_EPOCH_S=str(args.trial_seconds / args.reports),
                PYTHONPATH=os.pathsep.join([str(REPO / "bench" / "plugins"), str(REPO)]))


def run_platform(args: argparse.Namespace, address: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = platform_env(args)
        cmd = [sys.executable, str(REPO / "launch.py"), "--space", "sleep",
               "--trials", str(args.trials), "--max-epochs", str(args.reports),
               "--grace-epochs", "1", "--samples", "42", "--concurrency", str(args.concurrency),
               "--experiment", "bench", "--storage", f"{tmp}/ray",
               "--mlflow-uri", f"sqlite:///{tmp}/mlflow.db"]
        if address:
            cmd += ["--address", address]
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"platform run failed:\n{done.stderr[-3000:]}")
        from tracking.state import state_path

        state = json.loads(state_path(f"{tmp}/ray", "bench").read_text())
        steps = sum(int(t["last_step"]) for t in state["trials"].values())
    return {"steps": steps, "wall": wall} if address else {"steps": steps}


def run_platform_warm(args: argparse.Namespace) -> dict:
    """The platform joining a Ray that is already running (``--address``), as on a cluster:
    Ray's start is not timed, the platform's own process is, from start to exit."""
    import ray

    os.environ.update(platform_env(args))  # the cluster's workers import the benchmark space
    context = ray.init(address="local", num_cpus=args.concurrency, include_dashboard=True,
                       dashboard_host="127.0.0.1", logging_level="ERROR")
    try:
        return run_platform(args, address=context.address_info["gcs_address"])
    finally:
        ray.shutdown()


MODES = {"optuna": run_optuna, "tune": run_tune, "platform": run_platform,
         "platform-warm": run_platform_warm}
NAMES = {"optuna": "(a) Optuna n_jobs + SuccessiveHalving", "tune": "(b) Ray Tune defaults + ASHA",
         "platform": "(c) this platform + ASHA",
         "platform-warm": "(c') this platform + ASHA, joining a running Ray (--address)"}


def measure(mode: str, args: argparse.Namespace) -> dict:
    """Run one system in a fresh process; wall time from process start to exit."""
    cmd = [sys.executable, __file__, "--mode", mode, "--trials", str(args.trials),
           "--trial-seconds", str(args.trial_seconds), "--reports", str(args.reports),
           "--concurrency", str(args.concurrency)]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    wall = result.get("wall", wall)  # modes that start something untimed time themselves
    work = result["steps"] * args.trial_seconds / args.reports
    return {"mode": mode, "wall": wall, "work": work, "ideal": work / args.concurrency}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=sorted(MODES), help="internal: run one system")
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--trial-seconds", type=float, default=1.0)
    p.add_argument("--reports", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--systems", default="optuna,tune,platform",
                   help=f"comma-separated, first is the baseline; from {', '.join(MODES)}")
    args = p.parse_args()
    if args.mode:
        print(json.dumps(MODES[args.mode](args)))
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := [s for s in systems if s not in MODES]:
        p.error(f"--systems: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    rows = [measure(mode, args) for mode in systems]
    base = rows[0]["wall"]
    base_eff = rows[0]["wall"] / rows[0]["ideal"]
    print(f"overhead: {args.trials} trials x {args.trial_seconds:g} s, {args.reports} reports, "
          f"concurrency {args.concurrency}")
    print("| system | wall s | trial work s | ideal s | wall/ideal | wall ÷ (a)'s wall | "
          "wall/ideal ÷ (a)'s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {NAMES[row['mode']]} | {row['wall']:.1f} | {row['work']:.1f} | "
              f"{row['ideal']:.1f} | {row['wall'] / row['ideal']:.2f} | "
              f"{row['wall'] / base:.2f} | {row['wall'] / row['ideal'] / base_eff:.2f} |")
    print("(ASHA and Optuna's SuccessiveHalving prune differently, so the systems do different "
          "amounts of trial work; the last column compares overhead at equal work.)")


if __name__ == "__main__":
    main()
