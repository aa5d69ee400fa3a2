"""The platform's searcher beside a published multi-fidelity optimiser, DEHB (Awad et al.,
IJCAI 2021, ``pip install dehb``), on the multi-fidelity Hartmann functions that ship inside
``mf-prior-bench`` (no download), repeated over seeds at equal budget.

The platform's searcher is run as it runs in a search, without Ray (these functions cost
microseconds, so Ray's trial machinery would only add noise): Optuna's TPE with the settings
of ``--searcher tpe``, wrapped in the platform's :class:`search.prior.PriorSampler` for
``--prior``, the configuration the prior is centred on evaluated first (the seed configuration
of a search), and asynchronous successive halving (Optuna's ``SuccessiveHalvingPruner``, the
rule of Ray's ASHA) with the platform's defaults: 9 "epochs", grace 1, reduction factor 3.
Epoch ``e`` is the function's fidelity ``z = round(100 e / 9)``, so the rungs are z = 11, 33,
100, as DEHB's with ``min_fidelity 100/9, eta 3``. A trial continues from its last epoch, so
it costs the benchmark's cost ``λ(z)`` of the furthest fidelity it reached; DEHB evaluates
each (configuration, fidelity) from scratch and pays ``λ(z)`` each time, its own semantics.

Methods: DEHB (no prior; it has none), TPE+ASHA without prior, with a good prior (the optimum
perturbed by mf-prior-bench's own ``perturb_prior`` with std 0.25), and with a bad prior (the
point of the box farthest from the optimum, ``1 - x*``). Reported per function: the regret
(value at full fidelity of the best configuration evaluated at full fidelity, minus the
optimum) after 25 %, 50 % and 100 % of the budget, median and interquartile range over seeds.

DEHB and mf-prior-bench need ``numpy<2``, which the platform's stack (torch, Ray) does not
allow, so this benchmark runs in its own virtual environment, made on first use in
``bench/.peer-venv`` from the pinned versions below (needs the package registry once):

    python bench/peer_optimiser.py                 # 30 seeds, budget 30 full evaluations
    python bench/peer_optimiser.py --quick         # 3 seeds, budget 10
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".peer-venv"
PINNED = ["numpy<2", "dehb==0.1.2", "mf-prior-bench==1.10.0", "optuna==5.0.0",
          "matplotlib==3.9.4"]
FUNCTIONS = ("mfh3_good", "mfh6_good")
EPOCHS, GRACE, FACTOR = 9, 1, 3
FRACTIONS = (0.25, 0.5, 1.0)
METHODS = ("DEHB", "TPE+ASHA, no prior", "TPE+ASHA, good prior", "TPE+ASHA, bad prior")


# -- the environment ---------------------------------------------------------------------
def ensure_venv() -> Path:
    """The benchmark's own interpreter (made once)."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != "\n".join(PINNED):
        print(f"making {VENV.relative_to(REPO)} ({', '.join(PINNED)}) ...", file=sys.stderr,
              flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINNED], check=True)
        stamp.write_text("\n".join(PINNED))
    return python


# -- one function ------------------------------------------------------------------------
def fidelity(epoch: int) -> int:
    return round(100 * epoch / EPOCHS)


class Ledger:
    """Cost spent and the incumbent (best value evaluated at full fidelity) after each spend."""

    def __init__(self, budget: float, optimum: float):
        self.budget, self.optimum = budget, optimum
        self.spent, self.best = 0.0, math.inf
        self.trace: list[tuple[float, float]] = []  # (cost spent, regret of the incumbent)

    @property
    def done(self) -> bool:
        return self.spent >= self.budget

    def pay(self, cost: float, value: float | None = None) -> None:
        self.spent += cost
        if value is not None:
            self.best = min(self.best, value)
        self.trace.append((self.spent, self.best - self.optimum))

    def regret_at(self, budget: float) -> float:
        within = [r for spent, r in self.trace if spent <= budget + 1e-12]
        return within[-1] if within else math.inf


def evaluate(bench, config: dict[str, float], z: int) -> tuple[float, float]:
    """(value, cost λ(z)) of ``config`` at fidelity ``z``."""
    result = bench.query(config, at=z)
    return float(result.value.value), float(result.fid_cost.value)


def run_dehb(bench, seed: int, budget: float, optimum: float) -> Ledger:
    from dehb import DEHB

    ledger = Ledger(budget, optimum)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"dehb-{os.getpid()}-{seed}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimiser = DEHB(cs=bench.space, dimensions=len(list(bench.space.values())),
                         min_fidelity=100 / EPOCHS, max_fidelity=100, eta=FACTOR, n_workers=1,
                         seed=seed, output_path=str(out), log_level="ERROR")
    while not ledger.done:
        job = optimiser.ask()
        config = job["config"]  # a ConfigSpace configuration (configspace=True)
        if not hasattr(config, "keys"):
            config = optimiser.vector_to_configspace(config)
        z = max(1, min(100, round(job["fidelity"])))
        value, cost = evaluate(bench, dict(config), z)
        optimiser.tell(job, {"fitness": value, "cost": cost})
        ledger.pay(cost, value if z == 100 else None)
    return ledger


def run_platform(bench, seed: int, budget: float, optimum: float,
                 centre: dict[str, float] | None) -> Ledger:
    import optuna

    sys.path.insert(0, str(REPO))
    from search.prior import PriorSampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                         constant_liar=True)
    if centre is not None:
        sampler = PriorSampler(sampler, centre, seed=seed)
    study = optuna.create_study(
        direction="minimize", sampler=sampler,
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=GRACE,
                                                      reduction_factor=FACTOR))
    if centre is not None:
        study.enqueue_trial(centre)  # the seed configuration is a search's first trial
    names = list(bench.space.keys())
    ledger = Ledger(budget, optimum)
    while not ledger.done:
        trial = study.ask()
        config = {n: trial.suggest_float(n, 0.0, 1.0) for n in names}
        paid, value = 0.0, None
        for epoch in range(1, EPOCHS + 1):
            z = fidelity(epoch)
            value, cost = evaluate(bench, config, z)
            ledger.pay(cost - paid, value if epoch == EPOCHS else None)
            paid = cost
            trial.report(value, epoch)
            if ledger.done or (epoch < EPOCHS and trial.should_prune()):
                break
        if epoch == EPOCHS:
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return ledger


def one_function(name: str, seeds: list[int], budget: float) -> dict[str, list[Ledger]]:
    import mfpbench

    out: dict[str, list[Ledger]] = {m: [] for m in METHODS}
    for seed in seeds:
        bench = mfpbench.get(name, seed=seed)
        optimum_config = dict(bench.optimum)
        optimum = evaluate(bench, optimum_config, 100)[0]
        good = dict(mfpbench.get(name, seed=seed, prior=optimum_config, perturb_prior=0.25).prior)
        bad = {k: 1.0 - v for k, v in optimum_config.items()}
        out["DEHB"].append(run_dehb(bench, seed, budget, optimum))
        out["TPE+ASHA, no prior"].append(run_platform(bench, seed, budget, optimum, None))
        out["TPE+ASHA, good prior"].append(run_platform(bench, seed, budget, optimum, good))
        out["TPE+ASHA, bad prior"].append(run_platform(bench, seed, budget, optimum, bad))
        print(f"  {name} seed {seed} done", file=sys.stderr, flush=True)
    return out


def quartiles(values: list[float]) -> str:
    ordered = sorted(values)
    if len(ordered) == 1:
        q1 = med = q3 = ordered[0]
    else:
        q1, med, q3 = statistics.quantiles(ordered, n=4, method="inclusive")

    def f(x: float) -> str:
        return "none" if math.isinf(x) else f"{x:.3f}"

    return f"{f(med)} [{f(q1)}, {f(q3)}]"


def plot(results: dict[str, dict[str, list[Ledger]]], budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4), squeeze=False)
    xs = np.linspace(0, budget, 200)[1:]
    for ax, (name, by_method) in zip(axes[0], results.items(), strict=True):
        for method, ledgers in by_method.items():
            rows = np.array([[lg.regret_at(x) for x in xs] for lg in ledgers])
            rows[~np.isfinite(rows)] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(rows, axis=0)
                q1, q3 = np.nanpercentile(rows, 25, axis=0), np.nanpercentile(rows, 75, axis=0)
            (line,) = ax.plot(xs, med, label=method, lw=2 if "good" in method else 1.4)
            ax.fill_between(xs, q1, q3, alpha=0.15, color=line.get_color())
        ax.set_yscale("log")
        ax.set_xlabel("cost spent (full-fidelity evaluations)")
        ax.set_ylabel("regret of the incumbent")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def inside(args: argparse.Namespace) -> None:
    seeds = list(range(args.seeds))
    results = {}
    started = time.perf_counter()
    for name in FUNCTIONS:
        results[name] = one_function(name, seeds, args.budget)
    print(f"peer optimiser: {len(seeds)} seeds, budget {args.budget:g} full-fidelity "
          f"evaluations per run; regret median [IQR] (lower is better)")
    print("| function | method | " + " | ".join(f"at {int(f * 100)} %" for f in FRACTIONS)
          + " |")
    print("| --- | --- |" + " ---: |" * len(FRACTIONS))
    summary = {}
    for name, by_method in results.items():
        for method, ledgers in by_method.items():
            cells = [quartiles([lg.regret_at(f * args.budget) for lg in ledgers])
                     for f in FRACTIONS]
            print(f"| {name} | {method} | " + " | ".join(cells) + " |")
            summary[f"{name}/{method}"] = [[lg.regret_at(f * args.budget) for f in FRACTIONS]
                                           for lg in ledgers]
    print(f"wall time: {time.perf_counter() - started:.0f} s")
    plot(results, args.budget, Path(args.plot))
    shown = Path(args.plot)
    print(f"curves: {shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 seeds, budget 10")
    p.add_argument("--seeds", type=int, default=30, help="repetitions (30)")
    p.add_argument("--budget", type=float, default=30.0,
                   help="cost per run, in full-fidelity evaluations (30)")
    p.add_argument("--plot", default=None, help="picture (bench/peer_optimiser[_quick].png)")
    p.add_argument("--json", default=None, help="also write every run's regrets here")
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.seeds, args.budget = 3, 10.0
    args.plot = args.plot or str(HERE / f"peer_optimiser{'_quick' if args.quick else ''}.png")
    if args.inside:
        inside(args)
        return
    python = ensure_venv()
    forwarded = [a for a in sys.argv[1:] if a != "--quick"] + [
        "--seeds", str(args.seeds), "--budget", str(args.budget), "--plot", args.plot]
    raise SystemExit(subprocess.run([str(python), __file__, "--inside", *forwarded]).returncode)


if __name__ == "__main__":
    main()
