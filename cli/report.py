"""``launch.py report``: pictures and an HTML page of a finished search (:mod:`analysis.report`)."""

from __future__ import annotations

import argparse

from cli.main import Parser, add_search_flags


def build_parser() -> argparse.ArgumentParser:
    """Flags of the ``report`` sub-command."""
    p = Parser(prog="launch.py report",
               description="Pictures and an HTML page of a finished search: history, "
                           "parameter importances, parallel coordinates, slices, learning "
                           "curves, ASHA rungs and the best trial's figures; logged to the "
                           "experiment's MLflow parent run under report/.")
    add_search_flags(p, "the search to report on")
    p.add_argument("--out", default=None, help="output folder (reports/<experiment>)")
    return p


def run(argv: list[str]) -> int:
    """Parse the flags and run the sub-command; returns the exit code."""
    from analysis.report import run as run_report

    return run_report(build_parser().parse_args(argv))
