"""Command line of ``launch.py``: flags, sub-commands, and the one place where errors become
messages and exit codes.

Exit codes: 0 success; 1 the search ran but produced no result; 2 bad input (one line on
stderr naming the problem and the fix, nothing created).
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import json
import math
import os
import signal
import sys
from collections.abc import Sequence

from common.errors import BadInput, SearchStopped, full_disk_error
from search.settings import PRECISIONS, PRUNED_TRIALS, SCHEDULERS, SEARCHERS, SearchSettings

#: ``launch.py <sub-command> ...``: module whose ``run(argv) -> int`` handles it
SUBCOMMANDS = {
    "report": "cli.report",
    "compare": "cli.compare",
    "train": "cli.train",
    "blackout": "cli.blackout",
    "convert": "cli.convert",
}


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return value


def seed_int(text: str) -> int:
    """A ``--seed`` value: a whole number from 0 to 2**32 - 1 (what every sampler takes)."""
    from common.seeds import SEED_MAX

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{value} must be from 0 to {SEED_MAX}")
    return value


def key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value.strip()


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise BadInput(f"{message} (see --help)")

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 (argparse's)
        """argparse's, refusing an empty value (``--data "$FILE"`` with FILE unset): every
        flag and name here wants text, and an empty one was taken as the current folder, as
        absent, or named nothing in its error."""
        parsed, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(parsed, action.dest, None)
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, str) and not v.strip() for v in values):
                name = "/".join(action.option_strings) or action.metavar or action.dest
                optional = action.option_strings and not action.required
                self.error(f"argument {name}: empty value; give one"
                           + (" or leave the flag out" if optional else ""))
        return parsed, extras


#: The sub-commands that read a finished search; each takes :func:`add_search_flags`.
READS_A_SEARCH = ("report", "compare", "blackout")

MLFLOW_URI_OF_SEARCH = ("MLflow tracking URI (default: the one the search recorded in --storage; "
                        "give it when that store is reached by another address here)")


def add_search_flags(p: argparse.ArgumentParser, what: str) -> None:
    """``--experiment``, ``--storage``, ``--mlflow-uri``: the same names and meanings as the
    search's own flags, on every sub-command that reads a finished search."""
    p.add_argument("--experiment", required=True, help=f"{what} (the search's --experiment)")
    p.add_argument("--storage", default="ray_results",
                   help="the search's --storage folder or URI (ray_results)")
    p.add_argument("--mlflow-uri", default=None, help=MLFLOW_URI_OF_SEARCH)


def build_parser() -> argparse.ArgumentParser:
    """The ``launch.py`` argument parser (every flag is documented in README.md)."""
    p = Parser(
        prog="launch.py",
        description="Optuna-driven hyperparameter search on Ray Tune with ASHA and MLflow. "
                    "Sub-commands (--help after each for its flags): 'report --experiment NAME' "
                    "(pictures of a search, logged to MLflow), 'compare NAME [NAME...]' (best "
                    "trials of several searches, from MLflow), 'train --config FILE.yaml' "
                    "(retrain an --export-best configuration, test-set metrics), 'blackout "
                    "--experiment NAME' (occlusion map of a classifier search).",
    )
    p.add_argument("--space", default=None,
                   help="registered search space (default resnet1d; --list-spaces)")
    p.add_argument("--trials", type=positive_int, default=20, help="number of trials (20)")
    p.add_argument("--max-epochs", type=positive_int, default=9,
                   help="epochs of a trial that is never stopped early (9)")
    p.add_argument("--grace-epochs", type=positive_int, default=1,
                   help="epochs every trial runs before the scheduler may stop it (1)")
    p.add_argument("--space-file", metavar="FILE.yaml", default=None,
                   help="narrow ranges, fix values or change choices of the space (YAML; "
                        "see README); stored with the experiment for --resume")
    p.add_argument("--export-best", metavar="FILE.yaml", default=None,
                   help="write the best configuration (for 'launch.py train --config'): after "
                        "this search, or at once from the finished --experiment NAME")
    p.add_argument("--searcher", choices=SEARCHERS, default="tpe", help="Optuna sampler (tpe)")
    p.add_argument("--prior", default="seed", metavar="{seed,none,FILE.yaml}",
                   help="what the first proposals are drawn around: the seed configuration "
                        "(seed), nothing (none), or a configuration file (an --export-best "
                        "file or 'config: {name: value}'); its share of proposals decays as "
                        "trials finish (seed)")
    p.add_argument("--warm-start", default=None, metavar="EXPERIMENT[,EXPERIMENT...]",
                   help="give the searcher the finished trials of earlier searches of this "
                        "space (MLflow experiments in --mlflow-uri) before its first proposal; "
                        "trials that no longer fit the space are skipped and counted")
    p.add_argument("--pruned-trials", choices=PRUNED_TRIALS, default="pruned",
                   help="how trials the scheduler stopped early are told to Optuna: PRUNED with "
                        "their per-epoch values (Optuna's semantics), or COMPLETE with their "
                        "last value as Ray's OptunaSearch does (pruned)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="asha",
                   help="early-stopping scheduler: asha (one bracket: every trial may be "
                        "stopped at --grace-epochs), hyperband (several ASHA brackets, later "
                        "first stops for some trials; Optuna's TPE is fitted per bracket), "
                        "median, fifo (no stopping) (asha)")
    p.add_argument("--data", default=None,
                   help="HDF5 file (FILE::/GROUP for arrays kept in a group), the seed's own "
                        "format, or 'digits' for the larcv spaces; default: synthetic data")
    p.add_argument("--data-option", type=key_value, action="append", default=[],
                   metavar="KEY=VALUE", help="data-set option, repeatable (--show-space lists them)")
    p.add_argument("--samples", type=positive_int, default=None,
                   help="size of the synthetic data set (data-set default)")
    p.add_argument("--experiment", default=None,
                   help="experiment name (default: <space>-<date>-<time>); reuse it with --resume")
    p.add_argument("--mlflow-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--storage", default=None,
                   help="folder for Ray results and checkpoints (default: ./ray_results)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --experiment")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="seed of the searcher and of trials, 0 to 2**32-1 (0)")
    p.add_argument("--cpus-per-trial", type=non_negative_float, default=1.0,
                   help="CPUs per trial, fractions allowed (1)")
    p.add_argument("--gpus-per-trial", type=non_negative_float, default=0.0,
                   help="GPUs per trial, fractions allowed (0)")
    p.add_argument("--concurrency", type=positive_int, default=None,
                   help="trials at a time (default: as many as the resources allow)")
    p.add_argument("--workers-per-trial", type=positive_int, default=1,
                   help="data-parallel (DDP) workers per trial via Ray Train (1)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="training precision: fp32, or bf16/fp16 mixed precision (fp32)")
    p.add_argument("--max-failures", type=int, default=1,
                   help="retries of a crashed trial from its last checkpoint (1)")
    p.add_argument("--address", default=None,
                   help="join a running Ray cluster (e.g. 10.0.0.1:6379 or auto)")
    p.add_argument("--verbose", action="store_true",
                   help="Ray's log and full trial tables (default: one progress line)")
    p.add_argument("--list-spaces", action="store_true", help="list registered spaces and exit")
    p.add_argument("--show-space", metavar="NAME", default=None,
                   help="print a space, its seed configuration and data options, and exit")
    return p


def list_spaces() -> str:
    from search_spaces import registry

    objectives = {name: f"{s.metric} ({s.mode})" for name, s in registry().items()}
    width = max(len(o) for o in objectives.values())
    lines = [f"{'space':<14} {'kind':<10} {'dataset':<10} {'objective':<{width}}  description"]
    for name, space in registry().items():
        lines.append(f"{name:<14} {space.kind:<10} {space.dataset:<10} "
                     f"{objectives[name]:<{width}}  {space.description}")
    return "\n".join(lines)


def show_space(name: str) -> str:
    import inspect

    from datasets import get_dataset
    from search_spaces import get_space

    space = get_space(name)
    spec = get_dataset(space.dataset)
    out = [
        f"space      {space.name}: {space.description}",
        f"kind       {space.kind}",
        f"objective  {space.metric} ({space.mode})",
        f"dataset    {spec.name}: {spec.description} (default --samples {spec.default_samples})",
    ]
    for key, help_text in spec.options.items():
        out.append(f"  --data-option {key}=...  {help_text}")
    out.append("seed configuration (always the first trial):")
    out.append(json.dumps(dict(space.seed_config), indent=2))
    out.append("search space (Optuna define-by-run):")
    out.append(inspect.getsource(space.suggest))
    return "\n".join(out)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the search's flags; raises :class:`BadInput`."""
    args = build_parser().parse_args(list(argv))
    args.data_option = dict(args.data_option)
    return args


def settings_from(args: argparse.Namespace) -> SearchSettings:
    """The search's settings from parsed flags (``run_search`` checks them)."""
    names = {f.name for f in dataclasses.fields(SearchSettings)} - {"storage_given", "is_checked"}
    return SearchSettings(**{k: v for k, v in vars(args).items() if k in names})


def search_command(args: argparse.Namespace) -> int:
    """``launch.py [flags]``: run or resume a search (or export a finished one's best)."""
    from analysis.export import check_target, export_finished, write_best
    from search import run_search

    settings = settings_from(args)
    checked = settings.checked()  # bad flags fail here, before any export or search
    if args.export_best:
        check_target(args.export_best)
        if checked.experiment and not checked.resume:
            written = export_finished(checked.storage, checked.experiment, args.export_best,
                                      args.mlflow_uri)
            if written is not None:  # a finished search: nothing is run
                print(f"best configuration written to {written}")
                return 0
    result = run_search(settings)
    if result.exit_code == 0 and args.export_best:
        print(f"best configuration written to "
              f"{write_best(result.storage, result.experiment, args.export_best)}")
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    # Nothing leaves the machine unless the user asks: no usage reports from MLflow or Ray
    # (they also cost start-up time, and CI and clusters often have no internet).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # `kill -USR2 <pid>` prints every thread's stack to stderr and carries on: what a run
    # that seems stuck is doing, without a debugger (not SIGUSR1: Ray Tune takes that one
    # to stop a search)
    if hasattr(signal, "SIGUSR2"):
        faulthandler.register(signal.SIGUSR2, all_threads=True)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            import importlib

            return importlib.import_module(SUBCOMMANDS[argv[0]]).run(list(argv[1:]))
        args = parse(argv)
        if args.list_spaces:
            print(list_spaces())
            return 0
        if args.show_space:
            print(show_space(args.show_space))
            return 0
        return search_command(args)
    except BadInput as exc:  # DataError and UnknownSpaceError are BadInput too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SearchStopped as exc:  # a full disk, a lost MLflow store: says how to resume
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a full disk under any other command (train, convert, report)
        full = full_disk_error(exc)
        if full is None:
            raise
        where = f" ({full.filename})" if full.filename else ""
        print(f"error: {full.strerror}{where}; free space (or raise the quota) there and run "
              "the command again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: continue later with --resume --experiment NAME", file=sys.stderr)
        return 130
