"""A gzip-compressed --data file read as it is vs through its uncompressed copy, side by side.

    python bench/compressed_data.py --megabytes 512 --trials 2 --repeats 2

Writes an ``xrd`` file of ``--megabytes`` of Poisson counts (uncompressed), chunked and gzip-
compressed as h5py writes it with ``compression="gzip"``, then starts ``--trials`` processes
at once, each loading the data set as a trial does and reading every training pattern once
(an epoch's reads, without the model). Once they read the file as it is (each decompresses
it into its own memory), once through the copy that ``prepare_data`` makes in the cache (one
memory map, shared). Prints per mode the median over rounds of each process's load-and-read
time, its private (anonymous) memory and its resident file pages at the end (Linux'
/proc/self/status RssAnon and RssFile), the ratios, and the one-time cost of making the
copy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

READER = """
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from datasets import get_dataset
start = time.perf_counter()
data = get_dataset("xrd").load({path!r}, 0, {{}})
rows = np.sort(np.asarray(data.train))
total = 0.0
for begin in range(0, len(rows), 256):  # an epoch's reads, in sorted batches
    total += float(data.batch("x", rows[begin:begin + 256]).sum())
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kib = lambda key: int(status[key].split()[0]) * 1024
print(json.dumps({{"seconds": seconds, "anon": kib("RssAnon"), "file": kib("RssFile"),
                  "sum": total}}))
"""


def write_file(path: Path, megabytes: int, length: int = 2048) -> None:
    import h5py

    rows = megabytes * 2**20 // (length * 4)
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        out = f.create_dataset("patterns", shape=(rows, length), dtype=np.float32,
                               chunks=(64, length), compression="gzip")
        for start in range(0, rows, 4096):
            n = min(4096, rows - start)
            out[start:start + n] = rng.poisson(20.0, (n, length)).astype(np.float32)
        f["labels"] = np.arange(rows) % 14


def run_readers(path: str, trials: int) -> list[dict]:
    code = READER.format(root=str(ROOT), path=path)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(trials)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a reader failed")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--megabytes", type=int, default=512, help="uncompressed size (512)")
    p.add_argument("--trials", type=int, default=2, help="readers at once (2)")
    p.add_argument("--repeats", type=int, default=2, help="rounds of the two modes (2)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["SCITUNE_CACHE"] = str(Path(tmp) / "cache")
        from search.stages import prepare_data
        from search_spaces import registry

        source = Path(tmp) / "counts_gzip.h5"
        write_file(source, args.megabytes)
        print(f"file: {args.megabytes} MB of counts, {source.stat().st_size / 2**20:.0f} MB "
              f"gzip-compressed on disk; {args.trials} readers at once", flush=True)
        space = registry()["resnet1d"]
        start = time.perf_counter()
        copy = prepare_data(space, str(source), 0, 0, {})
        made = time.perf_counter() - start
        assert copy != str(source), "the file was not copied (below the copy threshold?)"
        start = time.perf_counter()
        prepare_data(space, str(source), 0, 0, {})
        again = time.perf_counter() - start
        results: dict[str, list[dict]] = {"as it is": [], "mapped copy": []}
        for round_ in range(args.repeats):
            modes = list(results) if round_ % 2 == 0 else list(results)[::-1]
            for mode in modes:
                results[mode] += run_readers(str(source) if mode == "as it is" else copy,
                                             args.trials)
        sums = {r["sum"] for rs in results.values() for r in rs}
        assert len(sums) == 1, f"the modes read different numbers: {sums}"

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    print("| mode | load + one read of the training rows, s | private memory (RssAnon), MB "
          "| file pages, shared with the other readers (RssFile), MB |\n"
          "| --- | --- | --- | --- |")
    for mode in results:
        spread = [round(r["seconds"], 2) for r in results[mode]]
        print(f"| {mode} | {median(mode, 'seconds'):.2f} (all: {spread}) | "
              f"{median(mode, 'anon') / 2**20:.0f} | {median(mode, 'file') / 2**20:.0f} |")
    print(f"time ratio (as it is / mapped copy): "
          f"{median('as it is', 'seconds') / median('mapped copy', 'seconds'):.2f}; "
          f"private memory ratio: {median('as it is', 'anon') / median('mapped copy', 'anon'):.2f}")
    print(f"one-time cost of the copy: {made:.1f} s (prepare_data with the file's checks); "
          f"finding it again on the next run: {again:.1f} s")


if __name__ == "__main__":
    main()
