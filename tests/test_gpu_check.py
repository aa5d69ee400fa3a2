"""The GPU check (bench/gpu_check.py) in its CPU dry run: the same code as on a GPU up to the
device choice, so it cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_gpu_check_cpu_dry_run_runs_every_check(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--cpu-dry-run",
                             "--out", str(out), "--work", str(tmp_path / "work")],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    report = json.loads((out / "gpu_check.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == ["concurrency", "step parity", "precision", "ddp", "model on cpu",
                            "time"]
    assert report["dry_run"] and all(c["passed"] is None for c in checks.values()), checks
    # what each check observed, on CPU
    assert checks["concurrency"]["measured"]["max_trials_at_once"] == 4
    assert checks["concurrency"]["measured"]["statuses"] == ["FINISHED"] * 4
    for precision in ("fp32", "bf16"):
        parity = checks["step parity"]["measured"][precision]
        assert parity["bare samples/s"] > 0 and parity["platform ÷ bare"] > 0
    for precision in ("fp32", "bf16", "fp16"):
        assert checks["precision"]["measured"][precision]["status"] == "FINISHED"
    assert checks["ddp"]["measured"]["mlflow_steps"] == [1, 2]
    assert checks["ddp"]["measured"]["checkpoints_before_kill"] >= 1
    assert checks["model on cpu"]["measured"]["agreement_cpu_vs_device"] == 1.0
    table = (out / "gpu_check.md").read_text()
    assert table.count("recorded (dry run)") == 6


def test_gpu_check_without_a_gpu_says_how_to_run_it(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"),
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no CUDA device here; run on a GPU machine, or pass --cpu-dry-run"]
    assert not (tmp_path / "gpu_check.json").exists()


def test_max_overlap_counts_trials_running_at_once():
    sys.path.insert(0, str(REPO / "bench"))
    from gpu_check import max_overlap

    assert max_overlap([(0, 10), (1, 9), (2, 8), (3, 7)]) == 4
    assert max_overlap([(0, 1), (1, 2), (2, 3)]) == 1  # one ends as the next starts
    assert max_overlap([(0, 5), (6, 9), (4, 7)]) == 2


def test_gpu_sampler_assigns_samples_to_time_windows(tmp_path, monkeypatch):
    """The sampler's long-lived ``nvidia-smi --loop-ms`` stream (here a stand-in printing the
    same CSV lines: nvidia-smi itself needs a GPU) gives each timed window the samples that
    nvidia-smi's clock put inside it, also when they are read after the window closed."""
    import time

    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"""#!{sys.executable}
import sys, time
from datetime import datetime
args = sys.argv[1:]
assert "--query-gpu=timestamp,utilization.gpu" in args, args
period = int(next(a for a in args if a.startswith("--loop-ms=")).split("=")[1]) / 1000
n = 0
while True:
    stamp = datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    print(f"{{stamp}}, {{n % 100}}" if n != 3 else "not a time, 55", flush=True)
    n += 1
    time.sleep(period)
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    sys.path.insert(0, str(REPO / "bench"))
    from gpu_check import GpuSampler, samples_between

    with GpuSampler(period_s=0.05, apps=False) as sampler:
        time.sleep(0.5)
        first = (time.time(), time.time() + 0.4)
        time.sleep(0.6)
        second = (time.time(), time.time() + 0.3)
        time.sleep(0.5)
    assert sampler.available and len(sampler.utilisation) >= 20, sampler.utilisation
    assert 55.0 in sampler.utilisation  # a line without a parsable time is stamped on arrival
    a, b = sampler.between(*first), sampler.between(*second)
    assert 3 <= len(a) <= 10 and 2 <= len(b) <= 8, (a, b)
    assert set(a).isdisjoint(b) and max(a) < min(b)  # each window its own samples, in order
    assert samples_between([1.0, 2.0, 3.0], [10, 20, 30], 1.5, 3.0) == [20, 30]
    assert samples_between([], [], 0.0, 1.0) == []
