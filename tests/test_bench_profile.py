"""The overhead profile (``bench/overhead_profile.py``): how py-spy's stacks are sorted, and
one real profiled search (slow suite)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import overhead_profile as prof  # noqa: E402

P = "/work/x/.venv/lib/python3.11/site-packages/ray"


def frames(*names: str) -> str:
    return ";".join(names)


def test_driver_stacks_are_sorted_by_phase(tmp_path):
    raw = tmp_path / "driver.txt"
    main = 'process 1:"python launch.py";thread (1): MainThread'
    search = ("_search (/r/search/driver.py:420)", f"fit ({P}/tune/tuner.py:1)")
    ray_start = frames("run_search (/r/search/driver.py:300)",
                       "init_ray (/r/search/driver.py:127)", f"init ({P}/_private/worker.py:1927)")
    waiting = frames(*search, f"TuneController.step ({P}/tune/execution/tune_controller.py:702)",
                     f"wait ({P}/_private/worker.py:3000)")
    raw.write_text("\n".join([
        f"{main};{frames('<module> (launch.py:12)', '_find_and_load (<frozen>:1176)')} 7",
        f"{main};{ray_start} 5",
        f"{main};{waiting} 11",
        f"{main};{frames(*search, 'StudyMirror._reported (/r/tracking/optuna_store.py:143)')} 3",
        f"{main};{frames(search[0], 'Thread.join (threading.py:1119)')} 2",
        # another thread of the driver is not the driver's wall time
        'process 1:"python launch.py";thread (9): mlflow-writer;'
        f"{frames('MlflowTracker._drain (/r/tracking/tracker.py:158)')} 40",
        "a line that is no stack",
    ]))
    counts = prof.parse(raw, prof.DRIVER_PHASES, trial_thread=False)
    assert counts == {
        "imports (torch, Ray, MLflow, Optuna)": 7,
        "Ray's start (local node: GCS, raylet, dashboard)": 5,
        "Tune loop: waiting for workers (idle)": 11,
        "Tune loop: Optuna searcher (suggest, tell, journal)": 3,
        "Ray's shutdown (beside the summary, then waited for)": 2,
    }


def test_trial_threads_split_work_from_what_the_platform_adds(tmp_path):
    raw = tmp_path / "worker.txt"
    head = 'process 5:"ray::ImplicitFunc.train"'
    trial = frames("RunnerThread.run (/r/ray/air/_internal/util.py:98)",
                   "run_trial (/r/search/trial.py:130)", "fit_or_fail (/r/search/trial.py:151)")
    raw.write_text("\n".join([
        f"{head};thread (7): Thread-3 (<lambda>);{trial};fit (/r/trainables/loop.py:327);"
        "SleepKind.train_epoch (/r/bench/plugins/sleep_space.py:27) 50",
        f"{head};thread (7): Thread-3 (<lambda>);{trial};fit (/r/trainables/loop.py:330);"
        "report (/r/search/trial.py:124);report (/r/ray/train/_internal/session.py:698);"
        "_TrainSession._report_training_result (/r/ray/train/_internal/session.py:414);"
        "Semaphore.acquire (threading.py:479) 8",
        f"{head};thread (7): Thread-3 (<lambda>);{trial};fit (/r/trainables/loop.py:330);"
        "report (/r/search/trial.py:123);save_state (/r/search/trial.py:80) 2",
        f"{head};thread (7): Thread-3 (<lambda>);{trial};load_data (/r/search/trial.py:60) 4",
        # the worker's main thread is sampled at every instant: 70 samples, 64 of them with a trial
        f"{head};thread (5): MainThread;Worker.main_loop (/r/ray/_private/worker.py:1069) 70",
    ]))
    counts = prof.parse(raw, prof.TRIAL_PARTS, trial_thread=True)
    assert counts["the trial's own work (sleep)"] == 50
    assert counts["result round trip: blocked until the driver takes the result"] == 8
    assert counts["checkpoint write (torch.save)"] == 2
    assert counts["data, model and optimizer set-up"] == 4
    assert counts[prof.IDLE_SLOT] == 70 - 64


@pytest.mark.slow
def test_a_profiled_search_accounts_for_its_wall_time():
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        pytest.skip("py-spy is not installed (pip install -e '.[test]')")
    out = subprocess.run([sys.executable, str(REPO / "bench" / "overhead_profile.py"),
                          "--trials", "6", "--trial-seconds", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    wall = float(re.search(r"wall ([\d.]+) s under the profiler", out.stdout).group(1))
    driver = float(re.search(r"\*\*driver wall\*\* \| \*\*([\d.]+)\*\*", out.stdout).group(1))
    # the driver's table adds up to its wall time; on a loaded machine py-spy's sample count
    # can exceed rate x wall a little (104.7 s of samples in 103.7 s with both cores busy),
    # while a table counting a second thread, or missing a phase, is far off
    assert abs(driver - wall) < max(0.5, 0.02 * wall), out.stdout
    work, in_trials = map(float, re.search(r"trial work ([\d.]+) s of ([\d.]+) s", out.stdout).groups())
    # 6 trials of 5 x 0.2 s; ASHA stops some after 1 report: between 6 x 0.2 and 6 x 1 s of sleep
    assert 1.0 <= work <= 6.5 and work < in_trials, out.stdout
    assert "Tune loop: waiting for workers (idle)" in out.stdout
    assert "result round trip" in out.stdout
