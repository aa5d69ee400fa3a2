"""``launch.py train``: retrain one exported configuration (:mod:`analysis.retrain`)."""

from __future__ import annotations

import argparse

from cli.main import Parser, key_value, positive_int, seed_int


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="launch.py train",
               description="Retrain one configuration (e.g. from --export-best), log it to "
                           "MLflow and report its test-set metrics.")
    p.add_argument("--config", required=True, metavar="FILE.yaml",
                   help="space and configuration (as written by --export-best)")
    p.add_argument("--max-epochs", type=positive_int, default=9, help="epochs to train (9)")
    p.add_argument("--data", default=None,
                   help="data file (default: the one the configuration was searched on)")
    p.add_argument("--data-option", type=key_value, action="append", default=None,
                   metavar="KEY=VALUE", help="data-set option, repeatable (default: the file's)")
    p.add_argument("--samples", type=positive_int, default=None,
                   help="size of the synthetic data set (default: the file's)")
    p.add_argument("--seed", type=seed_int, default=None,
                   help="seed, 0 to 2**32-1 (default: the file's, else 0)")
    p.add_argument("--experiment", default=None,
                   help="MLflow experiment (default: <source experiment>-retrain)")
    p.add_argument("--mlflow-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="training precision (fp32)")
    return p


def run(argv: list[str]) -> int:
    """Parse the flags and run the sub-command; returns the exit code."""
    from analysis.retrain import run as run_retrain

    return run_retrain(build_parser().parse_args(argv))
