"""``launch.py convert``: a seed's own data format as the platform's HDF5 file.

The same import ``--data`` runs before a search (schema checks, stated assumptions, the
source's path and checksum recorded in the file's attributes), written to a file of the
user's choosing instead of only the cache, for users who want the HDF5 file itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from cli.main import Parser, key_value, seed_int


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="launch.py convert",
               description="Convert a data file or folder in a seed's own format into the "
                           "platform's HDF5 layout for a space's data set (README 'Data').")
    p.add_argument("source", metavar="SRC",
                   help="the file or folder, as --data would take it")
    p.add_argument("--space", required=True,
                   help="the space whose data set SRC is for (launch.py --list-spaces)")
    p.add_argument("--out", required=True, metavar="FILE.h5",
                   help="the HDF5 file to write (refused if it exists, unless --force)")
    p.add_argument("--data-option", type=key_value, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="data-set option, repeatable (launch.py --show-space NAME lists them)")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="seed of any split the conversion draws (0)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    return p


def run(argv: list[str]) -> int:
    """Parse the flags, convert, write ``--out`` atomically; returns the exit code."""
    from common.errors import BadInput
    from common.paths import temp_file_beside
    from datasets import get_dataset
    from search.stages import prepare_data
    from search_spaces import get_space

    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise BadInput(f"--out {out}: exists; choose another file or pass --force")
    if out.exists() and out.is_dir():
        raise BadInput(f"--out {out}: is a folder; name the HDF5 file to write")
    if not out.parent.exists():
        raise BadInput(f"--out {out}: folder {out.parent} does not exist; create it first")
    if Path(args.source).resolve() == out.resolve():
        raise BadInput(f"--out {out}: is the source itself; choose another file")
    space = get_space(args.space)
    options = dict(args.data_option)
    samples = get_dataset(space.dataset).default_samples  # a user's source sets its own size
    prepared = prepare_data(space, args.source, samples, args.seed, options)
    if Path(prepared).resolve() == Path(args.source).resolve():
        print(f"{args.source} is already in the platform's layout for {space.dataset} "
              "(checked); copying it")
    fd, tmp = temp_file_beside(out, ".part")
    os.close(fd)
    try:
        shutil.copyfile(prepared, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise BadInput(f"--out {out}: cannot write ({exc.strerror})") from None
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) for data set {space.dataset}; "
          f"use it with --space {space.name} --data {out}")
    return 0
