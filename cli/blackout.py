"""``launch.py blackout``: occlusion map of a classifier search's best model (:mod:`analysis.blackout`)."""

from __future__ import annotations

import argparse

from cli.main import Parser, add_search_flags


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="launch.py blackout",
               description="Occlusion map of the best model of a finished classifier search.")
    add_search_flags(p, "the finished classifier search")
    p.add_argument("--patch", type=int, default=4, help="edge of a blanked region in voxels (4)")
    p.add_argument("--samples", type=int, default=64, help="validation inputs averaged (64)")
    return p


def run(argv: list[str]) -> int:
    """Parse the flags and run the sub-command; returns the exit code."""
    from analysis.blackout import run as run_blackout

    return run_blackout(build_parser().parse_args(argv))
