"""Where the platform's overhead goes: one platform search of the sleeping trainable (the
overhead benchmark's leg (c)) under the py-spy sampling profiler, every process followed.

py-spy samples the wall clock (``--idle``) of every Python process of the search: the driver
(``launch.py``) and the Ray workers that run the trials. Samples are sorted by what the
thread was doing, so the tables add up to wall time:

* the driver's main thread, from start to exit: imports, Ray's start, the Tune loop (waiting
  for the workers vs its own work per result, by component), the final summary;
* the trial threads of the workers: the trial's own work (the sleep) against each cost the
  platform adds to a trial (the result round trip to the driver, checkpoint write and copy,
  set-up), plus the time a worker slot held no trial at all.

    pip install py-spy==0.4.3
    python bench/overhead_profile.py --trials 40 --trial-seconds 1
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from overhead import platform_env  # noqa: E402

#: (label, pattern any frame of the stack must match), first match wins; driver main thread
DRIVER_PHASES = [
    ("summary after the search (results table, best model to MLflow)", r"^finish \(.*summary\.py"),
    ("Ray's shutdown (beside the summary, then waited for)",
     r"^shutdown \(.*ray/_private/worker\.py|^Thread\.join \("),
    ("Tune loop: waiting for workers (idle)", r"^(wait|get) \(.*ray/_private/worker\.py|"
                                              r"^_ray_wait|ray_wait|^RayEventManager\.next"),
    ("Tune loop: MLflow callback", r"tracking/tracker\.py"),
    ("Tune loop: progress line", r"progress\.py"),
    ("Tune loop: Optuna searcher (suggest, tell, journal)", r"searcher\.py|optuna_store\.py|"
                                                             r"tune/search/optuna|site-packages/optuna/"),
    ("Tune loop: ASHA scheduler", r"async_hyperband|trial_scheduler"),
    ("Tune loop: checkpoint bookkeeping", r"_checkpoint_manager|checkpoint_manager"),
    ("Tune loop: experiment state snapshots", r"save_to_dir|checkpoint \(.*tune_controller|"
                                              r"_checkpoint|experiment_state"),
    ("Tune loop: starting / resetting trial actors", r"_schedule_trial_actor|_maybe_reuse|"
                                                      r"reset_config|_start_trial|add_actor"),
    ("Tune loop: other Tune work", r"tune_controller|tuner\.py|tuner_internal"),
    ("Ray's start (local node: GCS, raylet, dashboard)", r"^init_ray \(|^init \(.*ray/_private/worker\.py"),
    ("data and MLflow set-up", r"^prepare \(.*driver\.py"),
    ("imports (torch, Ray, MLflow, Optuna)", r"_find_and_load"),
]
#: the same for a worker's trial thread (stacks through ``run_trial``)
TRIAL_PARTS = [
    ("the trial's own work (sleep)", r"(^|\.)train_epoch \(.*sleep_space\.py"),
    ("result round trip: blocked until the driver takes the result",
     r"(^|\.)_report_training_result \(|^Semaphore\.acquire|^Queue\.put"),
    ("checkpoint copy into the trial's storage folder", r"persist_current_checkpoint"),
    ("checkpoint write (torch.save)", r"(^|\.)save_state \("),
    ("rest of report (temporary folder, metrics)", r"(^|\.)report \(.*(trial|session)\.py"),
    ("data, model and optimizer set-up", r"(^|\.)(load_data|build|make_optimizer|_setup) \("),
    ("evaluate and loop bookkeeping", r"^fit \(.*loop\.py"),
]


def classify(frames: list[str], table: list[tuple[str, str]]) -> str:
    for label, pattern in table:
        regex = re.compile(pattern)
        if any(regex.search(frame) for frame in frames):
            return label
    return "other"


IDLE_SLOT = "worker main thread while no trial thread ran"


def parse(raw: Path, parts_table: list[tuple[str, str]], trial_thread: bool) -> Counter:
    """Sample counts by part: of the driver's main thread, or of a worker's trial threads
    (plus, under ``IDLE_SLOT``, its main thread's samples at times no trial thread ran)."""
    counts: Counter = Counter()
    main_samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        parts = stack.split(";")
        thread = next((p for p in parts if p.startswith("thread (")), "")
        frames = [p for p in parts if not p.startswith(("process ", "thread ("))][::-1]
        n = int(count)
        if trial_thread:
            if any(f.startswith("run_trial (") for f in frames):
                counts[classify(frames, parts_table)] += n
            elif "MainThread" in thread:
                main_samples += n
        elif "MainThread" in thread:
            counts[classify(frames, parts_table)] += n
    if trial_thread:
        # every sample instant has one main-thread sample; those without a trial-thread
        # sample are the slot's time between trials (and before the first one)
        counts[IDLE_SLOT] = max(0, main_samples - sum(counts.values()))
    return counts


def table(title: str, counts: Counter, rate: float, total_label: str) -> None:
    total = sum(counts.values())
    print(f"| {title} | s | share |")
    print("| --- | ---: | ---: |")
    for label, n in counts.most_common():
        print(f"| {label} | {n / rate:.1f} | {n / total:.1%} |")
    print(f"| **{total_label}** | **{total / rate:.1f}** | 100% |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--trial-seconds", type=float, default=1.0)
    ap.add_argument("--reports", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    ap.add_argument("--raw", type=Path, default=None,
                    help="keep py-spy's raw stacks in this folder (one file a process)")
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        raise SystemExit("py-spy not found: pip install py-spy==0.4.3")
    with tempfile.TemporaryDirectory() as tmp:
        raw_dir = args.raw or Path(tmp) / "stacks"
        raw_dir.mkdir(parents=True, exist_ok=True)
        search = [sys.executable, str(REPO / "launch.py"), "--space", "sleep",
                  "--trials", str(args.trials), "--max-epochs", str(args.reports),
                  "--grace-epochs", "1", "--samples", "42", "--concurrency", str(args.concurrency),
                  "--experiment", "bench", "--storage", f"{tmp}/ray",
                  "--mlflow-uri", f"sqlite:///{tmp}/mlflow.db"]
        record = [pyspy, "record", "--idle", "--threads", "--nonblocking", "--full-filenames",
                  "--rate", str(args.rate), "--format", "raw"]
        env = platform_env(args)
        env["SCITUNE_BENCH_EPOCH_S"] = str(args.trial_seconds / args.reports)
        start = time.perf_counter()
        # the driver runs under py-spy; each trial worker is attached to as it appears (py-spy's
        # --subprocesses loses Ray's workers once they rename themselves)
        driver = subprocess.Popen([*record, "-o", str(raw_dir / "driver.txt"), "--", *search],
                                  env=env, cwd=tmp, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        attached: dict[int, subprocess.Popen] = {}
        while driver.poll() is None:
            for proc in psutil.Process(driver.pid).children(recursive=True):
                try:
                    title = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if proc.pid not in attached and title.startswith("ray::ImplicitFunc"):
                    attached[proc.pid] = subprocess.Popen(
                        [*record, "--pid", str(proc.pid), "-o",
                         str(raw_dir / f"worker_{proc.pid}.txt")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.05)
        wall = time.perf_counter() - start
        out, err = driver.communicate()
        for profiler in attached.values():
            profiler.wait(timeout=60)
        # py-spy exits 0 whatever the profiled process did: a search that ran prints its summary
        if driver.returncode != 0 or "=== " not in out:
            raise SystemExit(f"profiled search failed:\n{err[-3000:]}")
        driver_counts = parse(raw_dir / "driver.txt", DRIVER_PHASES, trial_thread=False)
        trial = Counter()
        slots_idle = 0
        unprofiled = 0  # workers py-spy could not attach to (gone, or not yet Python) write nothing
        for pid in attached:
            if not (raw_dir / f"worker_{pid}.txt").is_file():
                unprofiled += 1
                continue
            counts = parse(raw_dir / f"worker_{pid}.txt", TRIAL_PARTS, trial_thread=True)
            slots_idle += counts.pop(IDLE_SLOT, 0)
            trial.update(counts)
    rate = float(args.rate)
    print(f"overhead profile: platform, {args.trials} trials x {args.trial_seconds:g} s, "
          f"{args.reports} reports, concurrency {args.concurrency}; py-spy {args.rate} Hz, "
          f"wall {wall:.1f} s under the profiler")
    print()
    missed = wall - sum(driver_counts.values()) / rate
    if missed > 0:  # py-spy starts sampling once the new interpreter is up
        driver_counts["interpreter start, before py-spy's first sample"] = round(missed * rate)
    table("driver main thread, start to exit", driver_counts, rate, "driver wall")
    print()
    profiled = f"{len(attached) - unprofiled} worker processes" + (
        f"; {unprofiled} more not profiled: py-spy could not attach" if unprofiled else "")
    table(f"trial threads ({profiled})", trial, rate, "in trials")
    work = trial.get("the trial's own work (sleep)", 0) / rate
    in_trials = sum(trial.values()) / rate
    print()
    print(f"trial work {work:.1f} s of {in_trials:.1f} s spent in trials "
          f"({in_trials - work:.1f} s added, {(in_trials - work) / max(args.trials, 1) * 1000:.0f} ms"
          f" per trial); worker slots without a trial: {slots_idle / rate:.1f} s")


if __name__ == "__main__":
    main()
