"""GPU check: every GPU path of the platform, proven in one flag-free run on one GPU.

    python bench/gpu_check.py                  # on a machine with a CUDA GPU (make gpu-check)
    python bench/gpu_check.py --cpu-dry-run    # the same code on CPU, small sizes (make test)

Checks, each through the platform where a user would meet it (``launch.py``):

1. ``concurrency``: a search with ``--gpus-per-trial 0.25`` runs 4 trials at once on one GPU
   (overlap of the trials' MLflow run times, processes holding GPU memory sampled from
   ``nvidia-smi``, each trial's own peak GPU memory), every trial's MLflow run FINISHED.
2. ``step parity``: the ``resnet1d`` seed configuration through the platform's ``fit`` against
   a bare PyTorch loop in this process (the loops of ``bench/step_parity.py``), fp32 and bf16,
   rounds in ABAB/BABA order; samples/s, their ratio (target >= 0.97) and the GPU utilisation
   sampled during the platform's runs.
3. ``precision``: ``launch.py train --precision fp32|bf16|fp16 --device cuda`` of the seed
   configuration, same data, seed and epochs: no NaN, and bf16/fp16 (fp16 through the
   loop's gradient scaler) reach the fp32 run's validation top-1 within 0.05 and its
   validation loss within 10 %.
4. ``ddp``: ``--workers-per-trial 2 --gpus-per-trial 1``: two DDP workers sharing one GPU
   (gloo backend: NCCL refuses two ranks on one device; one GPU per worker uses NCCL); the
   driver is killed after the first epoch and the search ``--resume``d: the trial continues
   from its checkpoint, no epoch is trained twice, its MLflow run is FINISHED.
5. ``model on cpu``: the fp32 ``train --device cuda`` run's logged model loads with
   ``mlflow.pytorch.load_model(..., map_location="cpu")`` and predicts the same test-set
   classes on CPU as on the GPU (and its logged test top-1).
6. ``time``: the whole check within 8 minutes (GPU runs only).

Everything measured goes to ``gpu_check.json`` and ``gpu_check.md`` in ``--out``; any failed
check makes the exit code 1 with one line on stderr naming it. With ``--cpu-dry-run`` every
check runs the same code on CPU with small sizes (fractional CPUs stand in for fractional
GPUs); the thresholds that are GPU facts (speed, precision tolerance, time) are recorded there
but not enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

SPACE = "resnet1d"
TIME_LIMIT_S = 480.0
PARITY_TARGET = 0.97
TOP1_TOLERANCE = 0.05
LOSS_TOLERANCE = 0.10
AGREEMENT_TARGET = 0.99


@dataclass(frozen=True)
class Sizes:
    """How much work each check does (GPU run vs CPU dry run)."""

    samples: int  # synthetic patterns of every check's data set
    search_epochs: int  # epochs of each of the 4 concurrent trials
    parity_epochs: int
    parity_rounds: int
    parity_samples: int  # of the step-parity data set (bf16 on a CPU trains ~50 patterns/s)
    train_epochs: int  # epochs of each precision's train run
    ddp_epochs: int
    cpus_per_trial: float  # of each concurrent trial
    ddp_cpus_per_trial: float  # of the two-worker trial, shared by its workers
    command_timeout_s: float


GPU_SIZES = Sizes(samples=4000, search_epochs=3, parity_epochs=3, parity_rounds=3,
                  parity_samples=4000,
                  train_epochs=5, ddp_epochs=3, cpus_per_trial=2.0, ddp_cpus_per_trial=4.0,
                  command_timeout_s=300)
DRY_SIZES = Sizes(samples=300, search_epochs=2, parity_epochs=1, parity_rounds=2,
                  parity_samples=100,
                  train_epochs=1, ddp_epochs=2, cpus_per_trial=0.5, ddp_cpus_per_trial=1.0,
                  command_timeout_s=300)


@dataclass
class Check:
    """One check's outcome: ``passed`` is None where a dry run records without judging."""

    name: str
    passed: bool | None = None
    measured: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    reason: str = ""
    seconds: float = 0.0


class CheckFailed(Exception):
    """A check's condition does not hold; the message is its one-line reason."""


def require(condition: bool, reason: str) -> None:
    if not condition:
        raise CheckFailed(reason)


class GpuSampler:
    """Samples the GPU from outside this process: utilisation (%) from one long-lived
    ``nvidia-smi --loop-ms`` process (started once, so the measured process never forks while
    it is timed; each sample carries nvidia-smi's own clock time, so one sampler serves
    several timed windows, see :meth:`between`) and, with ``apps``, how many
    processes hold memory on the GPU (polled from a thread; for the checks that are not
    timed). Empty where ``nvidia-smi`` is absent."""

    def __init__(self, period_s: float = 0.25, apps: bool = True):
        self.period_s = period_s
        self.apps = apps
        self.utilisation: list[float] = []
        self.stamps: list[float] = []  # time.time() of each utilisation sample
        self.processes: list[int] = []
        self.pids: set[str] = set()
        self.available = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stream: subprocess.Popen | None = None

    def _query(self, what: str, fields: str) -> list[list[str]]:
        try:
            out = subprocess.run(["nvidia-smi", f"--query-{what}={fields}",
                                  "--format=csv,noheader,nounits"], capture_output=True,
                                 text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [[cell.strip() for cell in line.split(",")] for line in out.splitlines()
                if line.strip()]

    def _read_utilisation(self) -> None:
        assert self._stream is not None and self._stream.stdout is not None
        for line in self._stream.stdout:
            stamp, _, value = line.partition(",")
            try:
                utilisation = float(value)
            except ValueError:
                continue
            try:  # nvidia-smi's local time of the sample (output may reach us in bursts)
                when = datetime.strptime(stamp.strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            except ValueError:
                when = time.time()
            self.stamps.append(when)
            self.utilisation.append(utilisation)

    def between(self, start: float, end: float) -> list[float]:
        """Utilisation samples taken between ``time.time()`` values start and end (complete
        once the sampler has stopped)."""
        return samples_between(self.stamps, self.utilisation, start, end)

    def _poll_apps(self) -> None:
        while not self._stop.is_set():
            apps = [row for row in self._query("compute-apps", "pid,used_memory") if row]
            self.processes.append(len(apps))
            self.pids.update(row[0] for row in apps)
            self._stop.wait(self.period_s)

    def __enter__(self) -> GpuSampler:
        if not self.available:
            return self
        try:
            self._stream = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=timestamp,utilization.gpu",
                 "--format=csv,noheader,nounits",
                 f"--loop-ms={max(int(self.period_s * 1000), 50)}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._threads.append(threading.Thread(target=self._read_utilisation, daemon=True))
        except OSError:
            self._stream = None
        if self.apps:
            self._threads.append(threading.Thread(target=self._poll_apps, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.terminate()
            try:
                self._stream.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._stream.kill()
        for thread in self._threads:
            thread.join(timeout=10)

    def summary(self) -> dict[str, Any]:
        import numpy as np

        if not self.available:
            return {"nvidia_smi": "absent"}
        util = np.asarray(self.utilisation) if self.utilisation else np.asarray([np.nan])
        return {"gpu_util_mean_pct": round(float(np.nanmean(util)), 1),
                "gpu_util_median_pct": round(float(np.nanmedian(util)), 1),
                "gpu_util_samples": len(self.utilisation),
                "max_processes_on_gpu": max(self.processes, default=0),
                "distinct_pids_on_gpu": len(self.pids)}


class Runner:
    """Runs the checks in one work folder; holds the settings every check shares."""

    def __init__(self, dry_run: bool, work: Path, sizes: Sizes):
        self.dry_run = dry_run
        self.work = work
        self.sizes = sizes
        self.device = "cpu" if dry_run else "cuda"
        self.storage = work / "ray_results"
        self.db = work / "mlflow.db"
        self.uri = f"sqlite:///{self.db}"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.train_runs: dict[str, dict[str, Any]] = {}
        self.config_file = work / "seed_config.yaml"

    # -- helpers ---------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        if self.dry_run:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run must not touch a GPU if there is one
        return env

    def launch(self, name: str, *args: str) -> subprocess.CompletedProcess:
        """``launch.py ARGS`` as a user would run it; output kept in ``logs/NAME.log``."""
        log = self.logs / f"{name}.log"
        cmd = [sys.executable, str(REPO / "launch.py"), *args]
        with log.open("w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            result = subprocess.run(cmd, cwd=self.work, env=self.env(), stdout=out,
                                    stderr=subprocess.STDOUT, text=True,
                                    timeout=self.sizes.command_timeout_s)
        if result.returncode != 0:
            tail = log.read_text().strip().splitlines()[-1:] or [""]
            raise CheckFailed(f"launch.py {' '.join(args[:2])} ... exited {result.returncode}: "
                              f"{tail[0][:200]} (log: {log})")
        return result

    def search_args(self, experiment: str, *extra: str) -> list[str]:
        return ["--space", SPACE, "--samples", str(self.sizes.samples), "--scheduler", "fifo",
                "--experiment", experiment, "--storage", str(self.storage),
                "--mlflow-uri", self.uri, "--seed", "0", *extra]

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)

    def trial_runs(self, experiment: str) -> list[Any]:
        client = self.client()
        found = client.get_experiment_by_name(experiment)
        require(found is not None, f"no MLflow experiment {experiment!r}")
        runs = client.search_runs([found.experiment_id], max_results=1000)
        return [r for r in runs if "mlflow.parentRunId" in r.data.tags]

    def data(self, samples: int | None = None):
        """The synthetic set of ``samples`` patterns (default: every check's size)."""
        from datasets import get_dataset
        from search_spaces import get_space

        spec = get_dataset(get_space(SPACE).dataset)
        samples = samples or self.sizes.samples
        return spec.load(spec.prepare(None, samples, 0, {}), 0, {})

    # -- checks ----------------------------------------------------------------------------
    def concurrency(self, check: Check) -> None:
        gpus = "0" if self.dry_run else "0.25"
        check.target = ("4 trials overlap in time, 4 processes on the GPU, each trial's peak "
                        "GPU memory > 0, 4 MLflow runs FINISHED")
        with GpuSampler() as sampler:
            self.launch("concurrency", *self.search_args(
                "gpu-concurrency", "--trials", "4", "--max-epochs", str(self.sizes.search_epochs),
                "--gpus-per-trial", gpus, "--cpus-per-trial", str(self.sizes.cpus_per_trial)))
        runs = self.trial_runs("gpu-concurrency")
        statuses = sorted(r.info.status for r in runs)
        intervals = [(r.info.start_time, r.info.end_time or r.info.start_time) for r in runs]
        overlap = max_overlap(intervals)
        memory = [r.data.metrics.get("gpu_memory_peak_mib") for r in runs]
        check.measured.update({"trials": len(runs), "statuses": statuses,
                               "max_trials_at_once": overlap,
                               "trial_seconds": [round((e - s) / 1000, 1) for s, e in intervals],
                               "gpu_memory_peak_mib": [None if m is None else round(m, 1)
                                                       for m in memory],
                               **sampler.summary()})
        require(len(runs) == 4 and statuses == ["FINISHED"] * 4,
                f"expected 4 FINISHED trial runs, got {statuses}")
        require(overlap == 4, f"only {overlap} trials ran at once (target 4)")
        if not self.dry_run:
            require(all(m is not None and m > 0 for m in memory),
                    f"a trial did not train on the GPU (peak GPU memory {memory})")
            if sampler.available and sampler.processes and max(sampler.processes) > 0:
                require(max(sampler.processes) >= 4,
                        f"nvidia-smi saw at most {max(sampler.processes)} processes on the GPU")

    def step_parity(self, check: Check) -> None:
        import numpy as np
        import torch
        from step_parity import bare_epochs, platform_epochs

        from search_spaces import get_space

        space = get_space(SPACE)
        config = dict(space.seed_config)
        data = self.data(self.sizes.parity_samples)
        epochs, rounds = self.sizes.parity_epochs, self.sizes.parity_rounds
        check.target = (f"platform (its defaults: pictures every 3rd and the last epoch) ÷ bare "
                        f"samples/s >= {PARITY_TARGET}, median of rounds, fp32 and bf16")
        results = {}
        # One nvidia-smi process samples the whole check (started before any clock, never
        # forked from the timed process); each leg's samples are those of its time window,
        # picked once the sampler has stopped (its output can arrive late).
        windows: dict[str, list[tuple[float, float]]] = {"bare": [], "platform": []}
        with GpuSampler(period_s=0.1, apps=False) as sampler:
            for precision in ("fp32", "bf16"):
                # each leg: epochs -> samples it went through
                legs: dict[str, Callable[[int], int]] = {
                    "bare": partial(bare_epochs, space, config, data, device=self.device,
                                    precision=precision),
                    "platform": partial(platform_epochs, space, config, data,
                                        device=self.device, precision=precision),
                    "platform, pictures off": partial(platform_epochs, space, config, data,
                                                      figure_every=0, device=self.device,
                                                      precision=precision)}
                for fn in legs.values():  # untimed warm-up, one epoch (kernel choice, caches)
                    fn(1)
                rates: dict[str, list[float]] = {name: [] for name in legs}
                ratios: dict[str, list[float]] = {name: [] for name in legs if name != "bare"}
                for round_ in range(rounds):
                    # ABC, CBA, ...: each loop runs as often first as last (drift hits all alike)
                    order = list(legs.items()) if round_ % 2 == 0 else list(legs.items())[::-1]
                    for name, fn in order:
                        wall = time.time()
                        start = time.perf_counter()
                        seen = fn(epochs)
                        took = time.perf_counter() - start
                        rates[name].append(seen / took)
                        if name in windows:
                            windows[name].append((wall, wall + took))
                    for name in ratios:
                        ratios[name].append(rates[name][-1] / rates["bare"][-1])
                results[precision] = {
                    **{f"{name} samples/s": round(float(np.median(r)), 1)
                       for name, r in rates.items()},
                    **{f"{name} ÷ bare": round(float(np.median(r)), 3)
                       for name, r in ratios.items()},
                    "rounds (platform ÷ bare)": [round(r, 3) for r in ratios["platform"]]}
        utilisation = [u for window in windows["platform"] for u in sampler.between(*window)]
        bare_utilisation = [u for window in windows["bare"] for u in sampler.between(*window)]
        check.measured.update(results)
        check.measured["device"] = (torch.cuda.get_device_name() if self.device == "cuda"
                                    else "cpu")
        if utilisation:
            check.measured["gpu_util_during_platform_mean_pct"] = round(
                float(np.mean(utilisation)), 1)
            check.measured["gpu_util_during_platform_median_pct"] = round(
                float(np.median(utilisation)), 1)
        if bare_utilisation:
            check.measured["gpu_util_during_bare_mean_pct"] = round(
                float(np.mean(bare_utilisation)), 1)
        elif not sampler.available:
            check.measured["gpu_util_during_platform"] = "nvidia-smi absent"
        if not self.dry_run:
            for precision, r in results.items():
                require(r["platform ÷ bare"] >= PARITY_TARGET,
                        f"{precision}: platform ÷ bare {r['platform ÷ bare']} < {PARITY_TARGET}")

    def precision(self, check: Check) -> None:
        import math

        import yaml

        from search_spaces import get_space

        space = get_space(SPACE)
        self.config_file.write_text(yaml.safe_dump({
            "space": SPACE, "config": dict(space.seed_config),
            "data": {"samples": self.sizes.samples, "seed": 0}}))
        check.target = (f"finite metrics; bf16/fp16 val top-1 within {TOP1_TOLERANCE} and val "
                        f"loss within {LOSS_TOLERANCE:.0%} of fp32 after the same epochs")
        client = self.client()
        for precision in ("fp32", "bf16", "fp16"):
            self.launch(f"train-{precision}", "train", "--config", str(self.config_file),
                        "--max-epochs", str(self.sizes.train_epochs), "--device", self.device,
                        "--precision", precision, "--experiment", "gpu-check-train",
                        "--mlflow-uri", self.uri)
            experiment = client.get_experiment_by_name("gpu-check-train")
            run = client.search_runs([experiment.experiment_id],
                                     filter_string=f"params.precision = '{precision}'",
                                     order_by=["attributes.start_time DESC"], max_results=1)[0]
            metrics = run.data.metrics
            self.train_runs[precision] = {"run_id": run.info.run_id, "status": run.info.status,
                                          **{k: round(metrics[k], 4) for k in
                                             ("val_top1", "val_loss", "test_top1", "train_loss",
                                              "gpu_memory_peak_mib") if k in metrics}}
            check.measured[precision] = self.train_runs[precision]
            require(run.info.status == "FINISHED", f"{precision} run is {run.info.status}")
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            require("val_loss" in metrics and not bad, f"{precision}: non-finite {bad}")
        reference = self.train_runs["fp32"]
        for precision in ("bf16", "fp16"):
            run = self.train_runs[precision]
            top1_gap = abs(run["val_top1"] - reference["val_top1"])
            loss_gap = abs(run["val_loss"] - reference["val_loss"]) / max(reference["val_loss"],
                                                                          1e-9)
            check.measured[f"{precision}_vs_fp32"] = {"val_top1_gap": round(top1_gap, 4),
                                                      "val_loss_relative_gap": round(loss_gap, 4)}
            if not self.dry_run:
                require(top1_gap <= TOP1_TOLERANCE and loss_gap <= LOSS_TOLERANCE,
                        f"{precision}: val top-1 {run['val_top1']} / loss {run['val_loss']} vs "
                        f"fp32 {reference['val_top1']} / {reference['val_loss']}")

    def ddp(self, check: Check) -> None:
        from search.distributed import ddp_backend
        from tracking.state import state_path

        experiment = "gpu-ddp"
        gpus = 0.0 if self.dry_run else 1.0
        epochs = self.sizes.ddp_epochs
        check.target = ("the trial resumes from its checkpoint after the driver is killed: "
                        f"epochs 1..{epochs} each trained once, MLflow run FINISHED, the last "
                        "epoch's pictures logged")
        check.measured["backend"] = ddp_backend(gpus / 2) if gpus else "gloo (CPU)"
        args = self.search_args(experiment, "--trials", "1", "--max-epochs", str(epochs),
                                "--workers-per-trial", "2", "--gpus-per-trial", f"{gpus:g}",
                                "--cpus-per-trial", f"{self.sizes.ddp_cpus_per_trial:g}")
        log = self.logs / "ddp-first.log"
        state = state_path(self.storage, experiment)
        with log.open("w") as out, GpuSampler() as sampler:
            driver = subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args],
                                      cwd=self.work, env=self.env(), stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
            try:
                deadline = time.time() + self.sizes.command_timeout_s
                while time.time() < deadline and driver.poll() is None:
                    if state.exists() and any(t.get("last_step", 0) >= 1 for t in
                                              json.loads(state.read_text())["trials"].values()):
                        break
                    time.sleep(0.3)
                first_exit = driver.poll()
            finally:
                kill_session(driver)
        check.measured.update({f"first_start_{k}": v for k, v in sampler.summary().items()})
        require(first_exit is None, f"the first start ended by itself (exit {first_exit}) "
                                    f"before it could be killed (log: {log})")
        checkpoints = sorted((self.storage / f"{experiment}_train").glob(
            "train_*/checkpoint_*/checkpoint.pt"))
        check.measured["checkpoints_before_kill"] = len(checkpoints)
        require(bool(checkpoints), "rank 0 wrote no checkpoint before the kill")
        self.launch("ddp-resume", "--resume", "--experiment", experiment,
                    "--storage", str(self.storage))
        runs = self.trial_runs(experiment)
        require(len(runs) == 1, f"expected 1 trial run, got {len(runs)}")
        run = runs[0]
        steps = [m.step for m in self.client().get_metric_history(run.info.run_id, "val_top1")]
        trial_dir = next((self.storage / experiment).glob("trial_*"))
        epochs_reported = [json.loads(line)["epoch"] for line in
                           (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        check.measured.update({"status": run.info.status, "mlflow_steps": steps,
                               "epochs_reported": epochs_reported,
                               "gpu_memory_peak_mib": run.data.metrics.get("gpu_memory_peak_mib")})
        require(run.info.status == "FINISHED", f"the trial's run is {run.info.status}")
        require(steps == list(range(1, epochs + 1)), f"MLflow steps {steps}")
        require(epochs_reported[-(epochs - 1):] == list(range(2, epochs + 1))
                and epochs_reported.count(1) <= 1, f"epochs reported {epochs_reported}: the "
                "trial did not continue from its checkpoint")
        last_pictures = f"figures/epoch_{epochs:03d}"
        pictures = [a.path for a in self.client().list_artifacts(run.info.run_id, last_pictures)]
        check.measured["last_epoch_pictures"] = pictures
        require(f"{last_pictures}/confusion_matrix.png" in pictures,
                f"rank 0's pictures of epoch {epochs} did not reach MLflow ({pictures})")
        if not self.dry_run:
            require((run.data.metrics.get("gpu_memory_peak_mib") or 0) > 0,
                    "the DDP workers did not train on the GPU")

    def model_on_cpu(self, check: Check) -> None:
        import mlflow.pytorch
        import numpy as np
        import torch

        from trainables.loop import iterate_minibatches

        check.target = (f"loads on CPU; CPU and {self.device} predictions agree on >= "
                        f"{AGREEMENT_TARGET:.0%} of the test set; test top-1 as logged")
        require("fp32" in self.train_runs, "no fp32 train run (the precision check failed)")
        run = self.train_runs["fp32"]
        uri = f"runs:/{run['run_id']}/model"
        mlflow.set_tracking_uri(self.uri)
        on_cpu = mlflow.pytorch.load_model(uri, map_location="cpu").eval()
        on_device = mlflow.pytorch.load_model(uri, map_location=self.device).to(self.device)
        data = self.data()
        cfg = {"batch_size": 256}
        cpu_classes, device_classes, labels = [], [], []
        with torch.no_grad():
            for idx in iterate_minibatches(np.asarray(data.test), 256, None):
                x = torch.from_numpy(np.asarray(data.batch("x", idx, cfg), dtype=np.float32))
                cpu_classes.append(on_cpu(x).argmax(-1).numpy())
                device_classes.append(on_device.eval()(x.to(self.device)).argmax(-1).cpu().numpy())
                labels.append(np.asarray(data.batch("y", idx, cfg)))
        cpu_pred, dev_pred, y = map(np.concatenate, (cpu_classes, device_classes, labels))
        agreement = float((cpu_pred == dev_pred).mean())
        top1 = float((cpu_pred == y).mean())
        check.measured.update({"model_uri": uri, "test_samples": int(len(y)),
                               "agreement_cpu_vs_device": round(agreement, 4),
                               "test_top1_on_cpu": round(top1, 4),
                               "test_top1_logged": run.get("test_top1")})
        require(agreement >= AGREEMENT_TARGET, f"CPU and {self.device} agree on {agreement:.3f}")
        require(abs(top1 - run.get("test_top1", top1)) <= 0.01,
                f"test top-1 on CPU {top1:.4f} vs logged {run.get('test_top1')}")


def samples_between(stamps: Sequence[float], values: Sequence[float], start: float,
                    end: float) -> list[float]:
    """``values`` whose time ``stamps`` (ascending) fall within ``[start, end]``."""
    import bisect

    return list(values[bisect.bisect_left(stamps, start):bisect.bisect_right(stamps, end)])


def max_overlap(intervals: Sequence[tuple[int, int]]) -> int:
    """The most intervals ``(start, end)`` that hold at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))
    best = current = 0
    for _, change in events:
        current += change
        best = max(best, current)
    return best


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL a driver started with ``start_new_session`` and every process of its session
    (the Ray processes it started), by process group; nothing else."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        import psutil  # Ray's own processes may have left the group: find them by parent too

        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
    except Exception:  # noqa: BLE001, S110 - gone already
        pass
    proc.wait(timeout=60)


CHECKS: list[tuple[str, Callable[[Runner, Check], None]]] = [
    ("concurrency", Runner.concurrency),
    ("step parity", Runner.step_parity),
    ("precision", Runner.precision),
    ("ddp", Runner.ddp),
    ("model on cpu", Runner.model_on_cpu),
]


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (one row per check)."""
    lines = [f"GPU check, {report['started']}: {report['device']}, torch {report['torch']}, "
             f"CUDA {report['cuda']}, driver {report['driver']}, commit {report['commit'][:8]}"
             f" (sources {report.get('source_sha256', '?')})"
             f"{' (CPU dry run)' if report['dry_run'] else ''}; {report['seconds']:.0f} s"
             f"{'' if report.get('complete', True) else ' (cut short: later checks did not run)'}",
             "", "| check | measured | target | result |", "| --- | --- | --- | --- |"]
    for check in report["checks"]:
        measured = "; ".join(f"{k} {json.dumps(v, ensure_ascii=False)}"
                             for k, v in check["measured"].items())
        result = {True: "pass", False: f"FAIL: {check['reason']}",
                  None: "recorded (dry run)"}[check["passed"]]
        lines.append(f"| {check['name']} ({check['seconds']:.0f} s) | {measured} | "
                     f"{check['target']} | {result} |")
    return "\n".join(lines) + "\n"


def environment() -> dict[str, str]:
    import torch

    driver = "n/a"
    if shutil.which("nvidia-smi"):
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                     "--format=csv,noheader"], capture_output=True, text=True,
                                    timeout=10).stdout.strip() or "n/a"
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"torch": torch.__version__, "cuda": str(torch.version.cuda), "driver": driver,
            "commit": commit or "unknown", "source_sha256": source_digest()}


def source_digest() -> str:
    """sha256 over the project's Python files (path and content, sorted): names the code that
    ran even where the copy's ``.git`` lags its working tree (a GPU machine sent a checkout's
    files). ``python bench/gpu_check.py --digest`` prints it for the code here."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(REPO.glob("*.py")) + sorted(
            p for folder in ("search_spaces", "trainables", "datasets", "search", "tracking",
                             "analysis", "common", "bench") for p in (REPO / folder).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run every check on CPU with small sizes (no GPU needed)")
    p.add_argument("--out", default=str(REPO / "bench" / "gpu_check_out"),
                   help="folder for gpu_check.json and gpu_check.md (bench/gpu_check_out)")
    p.add_argument("--work", default=None,
                   help="folder for the checks' searches, MLflow and logs (a new temp folder)")
    p.add_argument("--only", default=None, metavar="NAMES",
                   help="comma-separated checks to run (e.g. 'precision,model on cpu' to rerun "
                        "what failed; 'model on cpu' needs 'precision'); default: all of "
                        + ", ".join(name for name, _ in CHECKS))
    p.add_argument("--digest", action="store_true",
                   help="print the digest of the project's Python files (as the report's "
                        "source_sha256) and exit")
    args = p.parse_args(argv)
    if args.digest:
        print(source_digest())
        return 0
    selected = [name for name, _ in CHECKS]
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in selected]
        if unknown or not wanted:
            print(f"error: --only: unknown check(s) {unknown or args.only!r}; choose from "
                  f"{', '.join(selected)}", file=sys.stderr)
            return 2
        selected = wanted
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; run on a GPU machine, or pass --cpu-dry-run",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="scitune-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = DRY_SIZES if args.cpu_dry_run else GPU_SIZES
    runner = Runner(args.cpu_dry_run, work, sizes)
    started = time.perf_counter()
    device = "cpu (dry run)" if args.cpu_dry_run else torch.cuda.get_device_name()
    print(f"GPU check on {device}: work folder {work}", flush=True)
    checks: list[Check] = []

    def write_report(done: bool) -> dict[str, Any]:
        # Written after every check too, so a run cut short (a time limit) keeps what it measured.
        seconds = time.perf_counter() - started
        report = {"started": started_at, "device": device, "dry_run": args.cpu_dry_run,
                  "complete": done, "seconds": round(seconds, 1), "work": str(work),
                  "sizes": asdict(sizes), "only": selected, **env,
                  "checks": [asdict(c) for c in checks]}
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "gpu_check.md").write_text(markdown(report))
        return report

    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    env = environment()
    for name, fn in CHECKS:
        if name not in selected:
            continue
        check = Check(name)
        t0 = time.perf_counter()
        print(f"[{time.perf_counter() - started:5.0f} s] {name} ...", flush=True)
        try:
            fn(runner, check)
            check.passed = None if args.cpu_dry_run else True
        except CheckFailed as exc:
            check.passed, check.reason = False, str(exc)
        except Exception as exc:  # noqa: BLE001 - any crash is that check's failure
            check.passed, check.reason = False, f"{type(exc).__name__}: {str(exc)[:300]}"
        check.seconds = time.perf_counter() - t0
        checks.append(check)
        verdict = {True: "pass", False: f"FAIL ({check.reason})", None: "ran"}[check.passed]
        print(f"[{time.perf_counter() - started:5.0f} s] {name}: {verdict}", flush=True)
        write_report(done=False)
    seconds = time.perf_counter() - started
    timing = Check("time", measured={"seconds": round(seconds, 1)},
                   target=f"<= {TIME_LIMIT_S:.0f} s on one GPU")
    if not args.cpu_dry_run:
        timing.passed = seconds <= TIME_LIMIT_S
        timing.reason = "" if timing.passed else f"took {seconds:.0f} s"
    checks.append(timing)
    report = write_report(done=True)
    print(markdown(report))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    failed = [c for c in checks if c.passed is False]
    if failed:
        print("gpu check failed: " + "; ".join(f"{c.name}: {c.reason}" for c in failed),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
