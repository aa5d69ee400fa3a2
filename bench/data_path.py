"""Data path: the platform's HDF5 reader vs a raw ``numpy.memmap`` of the same bytes, and the
memory two concurrent trials on one node cost for the data compared with one.

Throughput: random mini-batches (64 rows, sorted indices, as the loop draws them) and
contiguous epochs, each timed best-of-N, the two readers alternating. Memory: processes that
open the data set through the reader and touch every row; the data's cost is the growth of
their summed proportional set size (PSS: a page shared by two processes counts half to each).

    python bench/data_path.py --samples 20000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datasets import get_dataset  # noqa: E402
from trainables.loop import gather, iterate_minibatches  # noqa: E402


def raw_memmap(path: str, key: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        ds = f[key]
        return np.memmap(path, dtype=ds.dtype, mode="r", offset=ds.id.get_offset(),
                         shape=ds.shape)


def read_all(array, batches, device) -> float:
    start = time.perf_counter()
    for idx in batches:
        gather(array, idx, device)
    return time.perf_counter() - start


def child(path: str, hold: float) -> None:
    """One 'trial': PSS before opening, then open through the reader and touch every row."""
    import h5py  # noqa: F401 - imported before the baseline: a library is not data
    import psutil

    before = psutil.Process().memory_full_info().pss
    data = get_dataset("xrd").load(path, 0, {})
    total = 0.0
    for start in range(0, data.arrays["x"].shape[0], 512):
        total += float(np.asarray(data.arrays["x"][start : start + 512]).sum())
    print(json.dumps({"before": before}), flush=True)
    time.sleep(hold)  # stay alive so a sibling's PSS shares these pages


def memory(path: str, n: int) -> float:
    """Data cost of ``n`` concurrent reader processes: summed PSS growth (bytes)."""
    import psutil

    procs = [subprocess.Popen([sys.executable, __file__, "--child", path],
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    before = [json.loads(proc.stdout.readline())["before"] for proc in procs]
    now = [psutil.Process(proc.pid).memory_full_info().pss for proc in procs]
    for proc in procs:
        proc.terminate()
        proc.wait()
    return float(sum(b - a for a, b in zip(before, now, strict=True)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child")
    args = p.parse_args()
    if args.child:
        child(args.child, hold=3.0)
        return
    import torch

    spec = get_dataset("xrd")
    path = spec.prepare(None, args.samples, 0, {})
    # Memory first, while this process maps none of the file: a page this process also maps
    # would count partly here and make the trials' share look smaller than it is.
    one = memory(path, 1)
    two = memory(path, 2)
    data = spec.load(path, 0, {})
    raw = raw_memmap(path, "patterns")
    device = torch.device("cpu")
    n = raw.shape[0]
    rng = np.random.default_rng(0)
    random_batches = list(iterate_minibatches(np.arange(n), 64, rng))
    contiguous = [np.arange(s, min(s + 1024, n)) for s in range(0, n, 1024)]
    best = {}
    for label, batches in (("random mini-batches", random_batches),
                           ("contiguous epoch", contiguous)):
        times = {"reader": [], "raw": []}
        for _ in range(args.repeats):
            times["reader"].append(read_all(data.arrays["x"], batches, device))
            times["raw"].append(read_all(raw, batches, device))
        best[label] = {k: n * raw.shape[1] * 4 / min(v) / 1e6 for k, v in times.items()}
    size_mb = raw.nbytes / 1e6
    print(f"data path: {n} patterns x {raw.shape[1]} points ({size_mb:.0f} MB), "
          f"best of {args.repeats}")
    print("| read | reader MB/s | raw memmap MB/s | reader ÷ raw (target ≥ 0.9) |")
    print("| --- | ---: | ---: | ---: |")
    for label, rates in best.items():
        print(f"| {label} | {rates['reader']:.0f} | {rates['raw']:.0f} | "
              f"**{rates['reader'] / rates['raw']:.3f}** |")
    print()
    print(f"| trials (processes) reading the {size_mb:.0f} MB file | data cost: summed PSS "
          "growth MB |")
    print("| --- | ---: |")
    print(f"| 1 | {one / 1e6:.0f} |")
    print(f"| 2 concurrently | {two / 1e6:.0f} |")
    print(f"| **2 ÷ 1** (target ≤ 1.2) | **{two / one:.2f}** |")


if __name__ == "__main__":
    main()
