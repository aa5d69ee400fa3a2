"""Command line of ``launch.py``: flags, validation before anything starts, exit codes.

Exit codes: 0 success; 1 the search ran but produced no result; 2 bad input (one line on
stderr naming the problem and the fix, nothing created).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

SEARCHERS = ("tpe", "random", "qmc", "gp", "cmaes")
#: ``launch.py <sub-command> ...``: module whose ``run(argv) -> int`` handles it
SUBCOMMANDS = {
    "report": "experiment.report",
    "compare": "experiment.compare",
    "train": "experiment.retrain",
    "blackout": "experiment.blackout",
}
SCHEDULERS = ("asha", "median", "fifo")


class BadInput(Exception):
    """Input the user must fix; printed as one line, exit code 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return value


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise BadInput(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    """The ``launch.py`` argument parser (every flag is documented in README.md)."""
    p = _Parser(
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
    p.add_argument("--trials", type=_positive_int, default=20, help="number of trials (20)")
    p.add_argument("--max-epochs", type=_positive_int, default=9,
                   help="epochs of a trial that is never stopped early (9)")
    p.add_argument("--grace-epochs", type=_positive_int, default=1,
                   help="epochs every trial runs before the scheduler may stop it (1)")
    p.add_argument("--space-file", metavar="FILE.yaml", default=None,
                   help="narrow ranges, fix values or change choices of the space (YAML; "
                        "see README); stored with the experiment for --resume")
    p.add_argument("--export-best", metavar="FILE.yaml", default=None,
                   help="write the best configuration (for 'launch.py train --config'): after "
                        "this search, or at once from the finished --experiment NAME")
    p.add_argument("--searcher", choices=SEARCHERS, default="tpe", help="Optuna sampler (tpe)")
    p.add_argument("--pruned-trials", choices=("pruned", "complete"), default="pruned",
                   help="how trials the scheduler stopped early are told to Optuna: PRUNED with "
                        "their per-epoch values (Optuna's semantics), or COMPLETE with their "
                        "last value as Ray's OptunaSearch does (pruned)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="asha",
                   help="early-stopping scheduler (asha)")
    p.add_argument("--data", default=None,
                   help="HDF5 file (or the seed's own format, or 'digits' for the larcv "
                        "spaces); default: synthetic data")
    p.add_argument("--data-option", type=_key_value, action="append", default=[],
                   metavar="KEY=VALUE", help="data-set option, repeatable (--show-space lists them)")
    p.add_argument("--samples", type=_positive_int, default=None,
                   help="size of the synthetic data set (data-set default)")
    p.add_argument("--experiment", default=None,
                   help="experiment name (default: <space>-<date>-<time>); reuse it with --resume")
    p.add_argument("--mlflow-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--storage", default=None,
                   help="folder for Ray results and checkpoints (default: ./ray_results)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --experiment")
    p.add_argument("--seed", type=int, default=0, help="seed of the searcher and of trials (0)")
    p.add_argument("--cpus-per-trial", type=_non_negative_float, default=1.0,
                   help="CPUs per trial, fractions allowed (1)")
    p.add_argument("--gpus-per-trial", type=_non_negative_float, default=0.0,
                   help="GPUs per trial, fractions allowed (0)")
    p.add_argument("--concurrency", type=_positive_int, default=None,
                   help="trials at a time (default: as many as the resources allow)")
    p.add_argument("--workers-per-trial", type=_positive_int, default=1,
                   help="data-parallel (DDP) workers per trial via Ray Train (1)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
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


def check_writable_dir(path: Path, flag: str) -> None:
    """Raise :class:`BadInput` unless ``path`` is (or can be created as) a writable folder.

    Creates nothing: checks the nearest existing ancestor."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BadInput(f"{flag} {path}: {probe} is a file, not a folder; choose another path")
    try:  # a real write: permission bits say nothing for root or read-only mounts
        fd, tmp = tempfile.mkstemp(prefix=".scitune-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise BadInput(f"{flag} {path}: {probe} is not writable ({exc.strerror}); "
                       "choose a writable folder") from None


def resolve_mlflow_uri(uri: str | None) -> str:
    """Default and absolutise the tracking URI, and check it can be reached (creates nothing)."""
    if uri is None:
        return f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        raw = uri[len("sqlite:///"):]
        db = Path(raw if raw.startswith("/") else Path.cwd() / raw)
        check_writable_dir(db.parent, "--mlflow-uri")
        if not db.parent.exists():
            raise BadInput(f"--mlflow-uri {uri}: folder {db.parent} does not exist; create it")
        return f"sqlite:///{db}"
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BadInput(f"--mlflow-uri {uri}: tracking server unreachable ({reason}); "
                           "start it (mlflow server ...) or fix the URI") from None
        return uri
    if uri.startswith(("postgresql", "mysql", "databricks")):
        return uri
    raise BadInput(f"--mlflow-uri {uri}: use sqlite:////abs/path.db or http://host:port")


def is_uri(path: str | None) -> bool:
    """True for ``scheme://...`` storage (cloud or shared filesystems served by pyarrow)."""
    return bool(path) and "://" in str(path) and not str(path).startswith("file://")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and normalise flags; raises :class:`BadInput`."""
    args = build_parser().parse_args(list(argv))
    if args.max_failures < 0:
        raise BadInput("--max-failures must be >= 0")
    if args.grace_epochs > args.max_epochs:
        raise BadInput(f"--grace-epochs {args.grace_epochs} exceeds --max-epochs "
                       f"{args.max_epochs}; lower it")
    if args.cpus_per_trial == 0 and args.gpus_per_trial == 0:
        raise BadInput("--cpus-per-trial and --gpus-per-trial are both 0; a trial needs one")
    if args.gpus_per_trial > 1 and args.gpus_per_trial != int(args.gpus_per_trial):
        raise BadInput("--gpus-per-trial above 1 must be a whole number")
    if args.resume and not args.experiment:
        raise BadInput("--resume needs --experiment NAME (the experiment to continue)")
    if args.experiment is not None and (not args.experiment.strip()
                                        or "/" in args.experiment or args.experiment in (".", "..")):
        raise BadInput(f"--experiment {args.experiment!r}: use a plain name without '/'")
    args.storage_given = args.storage is not None
    if is_uri(args.storage):
        try:
            import pyarrow.fs

            pyarrow.fs.FileSystem.from_uri(args.storage)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
            raise BadInput(f"--storage {args.storage}: unusable URI ({exc}); use a shared "
                           "folder or a URI such as s3://bucket/path") from None
    else:
        storage = Path(args.storage or "ray_results")
        args.storage = str(storage if storage.is_absolute() else Path.cwd() / storage)
    args.data_option = dict(args.data_option)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    # Nothing leaves the machine unless the user asks: no usage reports from MLflow or Ray
    # (they also cost start-up time, and CI and clusters often have no internet).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from datasets.base import DataError
    from search_spaces import UnknownSpaceError

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
        from experiment.driver import run_search

        return run_search(args)
    except (BadInput, DataError, UnknownSpaceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: continue later with --resume --experiment NAME", file=sys.stderr)
        return 130
