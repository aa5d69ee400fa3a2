"""Memory a synthetic data set takes while it is generated, per sample, against its file size.

    python bench/generation_memory.py [--small 1000] [--large 3000] [--datasets xrd,calo]

Each data set is generated twice, with ``--small`` and ``--large`` samples, each in a fresh
process (one generator process: ``SCITUNE_DATA_WORKERS=1``) into an empty cache; the growth of
that process's peak RSS between the two, divided by the growth of the file, is the factor
``check_room`` in each data set's ``prepare`` must cover (printed beside the one it uses).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the factor each generator's ``check_room`` call uses
USED = {"xrd": 5.0, "calo": 2.0, "larcv": 2.5, "multimodal": 2.5, "watchmal": 0.05}

ONE_RUN = """
import json, os, resource, sys
sys.path.insert(0, sys.argv[3])
from datasets import get_dataset
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
path = get_dataset(sys.argv[1]).prepare(None, int(sys.argv[2]), 0, {})
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "file_bytes": os.path.getsize(path)}))
"""


def measure(name: str, samples: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, SCITUNE_CACHE=cache, SCITUNE_DATA_WORKERS="1")
        out = subprocess.run([sys.executable, "-c", ONE_RUN, name, str(samples), str(REPO)],
                             env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=1000, help="samples of the first set")
    p.add_argument("--large", type=int, default=3000, help="samples of the second set")
    p.add_argument("--datasets", default=",".join(USED), help="comma-separated names")
    args = p.parse_args()
    print(f"peak RSS growth ÷ file growth, {args.small} → {args.large} samples, one process")
    print("| data set | file bytes a sample | peak RSS growth a sample | factor | check_room uses |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.datasets.split(","):
        small, large = measure(name, args.small), measure(name, args.large)
        rows = args.large - args.small
        file_row = (large["file_bytes"] - small["file_bytes"]) / rows
        rss_row = (large["peak_kib"] - small["peak_kib"]) * 1024 / rows
        print(f"| {name} | {file_row:.0f} | {rss_row:.0f} | {rss_row / file_row:.2f} | "
              f"{USED.get(name, '?')} |", flush=True)


if __name__ == "__main__":
    main()
