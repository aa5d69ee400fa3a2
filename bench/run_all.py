"""Run every benchmark and print its tables (paste them into bench/RESULTS.md).

    python bench/run_all.py            # full size
    python bench/run_all.py --quick    # small size, a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = [
    ["overhead.py", "--trials", "200", "--trial-seconds", "1"],
    ["overhead.py", "--trials", "200", "--trial-seconds", "5"],
    ["step_parity.py", "--samples", "4000", "--epochs", "2", "--repeats", "6"],
    ["data_path.py", "--samples", "40000", "--repeats", "5"],
    ["data_generation.py", "--samples", "2000", "--repeats", "2"],
    ["search_efficiency.py", "--trials-json", str(HERE / "search_efficiency_trials.json"),
     "--curves-json", str(HERE / "search_efficiency_curves.json")],
]
QUICK = [
    ["overhead.py", "--trials", "40", "--trial-seconds", "1"],
    ["step_parity.py", "--samples", "1500", "--epochs", "1", "--repeats", "4"],
    ["data_path.py", "--samples", "10000", "--repeats", "5"],
    ["data_generation.py", "--samples", "500", "--repeats", "2"],
    ["search_efficiency.py", "--quick"],
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    args = p.parse_args()
    for bench in QUICK if args.quick else FULL:
        start = time.perf_counter()
        print(f"\n## `python bench/{' '.join(bench)}`\n", flush=True)
        out = subprocess.run([sys.executable, str(HERE / bench[0]), *bench[1:]],
                             capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.strip()]
        print("\n".join(lines))
        if out.returncode != 0:
            print(f"FAILED (exit {out.returncode}):\n{out.stderr[-2000:]}")
        print(f"\n({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
