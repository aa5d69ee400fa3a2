"""``launch.py compare``: best trials of several searches side by side (:mod:`analysis.compare`)."""

from __future__ import annotations

import argparse

from cli.main import Parser


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="launch.py compare",
               description="Best trials of several searches side by side, read from MLflow.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="experiment names, or shell-style globs quoted from the shell ('xrd-*')")
    p.add_argument("--experiment", action="append", default=[], metavar="NAME",
                   help="a search to compare (the search's --experiment; repeatable, globs "
                        "allowed), the same as naming it as NAME")
    p.add_argument("--storage", default=None,
                   help="only the searches whose --storage was this folder or URI; their "
                        "recorded MLflow store is the default --mlflow-uri")
    p.add_argument("--mlflow-uri", default=None,
                   help="MLflow tracking URI (default: the one the searches in --storage "
                        "recorded, else sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="also write the rows as CSV to FILE ('-': CSV on stdout instead of the table)")
    return p


def run(argv: list[str]) -> int:
    """Parse the flags and run the sub-command; returns the exit code."""
    from analysis.compare import run as run_compare

    return run_compare(build_parser().parse_args(argv))
