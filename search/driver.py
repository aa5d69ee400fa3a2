"""The search driver: validate → Ray → Optuna searcher + scheduler → Tuner → MLflow → summary.

Everything that can be checked is checked before Ray starts or anything is written, so bad
input leaves no experiment folder, MLflow run or data file behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from common.errors import (
    BadInput,
    OutOfSpace,
    SearchStopped,
    TrackingFailed,
    full_disk_error,
    transport_failure,
)
from common.paths import check_writable_dir, is_uri
from common.signals import sigterm_as_interrupt
from datasets import get_dataset
from datasets.base import file_fingerprint
from search.settings import SearchResult, SearchSettings
from search.stages import check_space_fits_data, prepare_data
from search_spaces import Space, get_space
from tracking.record import same_config
from tracking.state import (
    ExperimentState,
    held_driver_locks,
    hold_driver_lock,
    release_driver_locks,
    state_path,
)
from tracking.store import (
    RUN_KIND_TAG,
    STORAGE_TAG,
    git_commit,
    open_mlflow_experiment,
    resolve_mlflow_uri,
    shown_uri,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Settings stored with an experiment and taken from there on ``--resume``.
STORED_SETTINGS = ("space", "trials", "max_epochs", "grace_epochs", "searcher", "scheduler",
                   "seed", "data", "data_option", "samples", "workers_per_trial", "precision",
                   "pruned_trials", "space_file", "prior", "warm_start")


#: ASHA's and Hyperband's reduction factor (analysis.report draws the rungs with it)
REDUCTION_FACTOR = 3
#: CPU share of the Tune trial that drives a multi-worker (Ray Train) trial.
DRIVER_CPU = 0.01
#: Shipped to every node of a cluster joined with --address (the code trials import).
RUNTIME_EXCLUDES = [".git", ".venv", "ray_results", "mlflow.db", "mlartifacts", "reports", "*.h5", "*.pt",
                    "__pycache__", ".pytest_cache", ".ruff_cache"]


def join(storage: str, name: str) -> str:
    """``storage/name`` for a folder or a URI."""
    return f"{storage.rstrip('/')}/{name}"


def make_sampler(name: str, seed: int):
    """The Optuna sampler behind ``--searcher``."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "tpe":
        # multivariate+group model the conditional (per-stage) parameters jointly;
        # constant_liar keeps parallel trials from proposing the same point.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise BadInput(f"--searcher {name}: unknown")


#: the schedulers' time unit: the epoch every result carries, not Tune's count of results
#: (``training_iteration``), which restarts at 1 when a multi-worker trial resumes from its
#: Ray Train checkpoint and counts a re-reported epoch twice
TIME_ATTR = "epoch"


def make_scheduler(name: str, max_epochs: int, grace_epochs: int, searcher: Any = None):
    """The Tune trial scheduler behind ``--scheduler`` (time unit: :data:`TIME_ATTR`, epochs);
    ``hyperband`` places each trial in the bracket its ``searcher`` chose
    (see :mod:`search.searcher`)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if name == "asha":
        return ASHAScheduler(time_attr=TIME_ATTR, max_t=max_epochs,
                             grace_period=grace_epochs, reduction_factor=REDUCTION_FACTOR)
    if name == "hyperband":
        from search.searcher import BracketedHyperBand

        return BracketedHyperBand(searcher, time_attr=TIME_ATTR, max_t=max_epochs,
                                  grace_period=grace_epochs, reduction_factor=REDUCTION_FACTOR)
    if name == "median":
        return MedianStoppingRule(time_attr=TIME_ATTR, grace_period=grace_epochs,
                                  min_samples_required=3)
    return FIFOScheduler()


def check_address(address: str) -> None:
    """Fail fast (exit 2) when ``--address host:port`` does not answer."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise BadInput(f"--address {address}: expected HOST:PORT (e.g. 127.0.0.1:6379) or auto")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        raise BadInput(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc});"
                       " start one with 'ray start --head' or fix the address") from None


def init_ray(args: SearchSettings) -> str | None:
    """Start a local Ray or join ``--address``; return the dashboard URL."""
    import ray

    level = logging.INFO if args.verbose else logging.ERROR
    common = dict(include_dashboard=True, logging_level=level, log_to_driver=args.verbose)
    if args.address:
        check_address(args.address)
        # The code trials import must reach every node: ship this checkout as the job's
        # working directory (packages themselves must be installed on the nodes).
        runtime_env = {"working_dir": str(REPO_ROOT), "excludes": RUNTIME_EXCLUDES}
        try:
            context = ray.init(address=args.address, runtime_env=runtime_env, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BadInput(f"--address {args.address}: cannot join ({exc}); "
                           "check the cluster is running") from None
    else:
        context = ray.init(address="local", num_cpus=os.cpu_count(),
                           dashboard_host="127.0.0.1", **common)
    url = getattr(context, "dashboard_url", None)
    return f"http://{url}" if url and not url.startswith("http") else url


@dataclass(frozen=True)
class ClusterSnapshot:
    """What the resource check needs to know about the cluster."""

    cpus: float
    gpus: float
    largest_node_cpus: float
    nodes: int


def local_snapshot() -> ClusterSnapshot:
    """The local Ray node this driver would start: every CPU, every visible CUDA device."""
    import torch

    cpus = float(os.cpu_count() or 1)
    return ClusterSnapshot(cpus=cpus, gpus=float(torch.cuda.device_count()),
                           largest_node_cpus=cpus, nodes=1)


def cluster_snapshot() -> ClusterSnapshot:
    """The running cluster Ray is connected to."""
    import ray

    total = ray.cluster_resources()
    alive = [n for n in ray.nodes() if n["Alive"]]
    node_cpus = max((n["Resources"].get("CPU", 0.0) for n in alive), default=0.0)
    return ClusterSnapshot(cpus=total.get("CPU", 0.0), gpus=total.get("GPU", 0.0),
                           largest_node_cpus=node_cpus, nodes=len(alive))


RAY_RESOURCE_UNIT = 1e-4  # Ray rounds resource requests to this; below it a request is 0


def check_resources(args: SearchSettings, trials: int, cluster: ClusterSnapshot) -> int:
    """Check the request fits ``cluster``; return the number of concurrent trials."""
    cpus, gpus, node_cpus = cluster.cpus, cluster.gpus, cluster.largest_node_cpus
    if args.gpus_per_trial > gpus:
        raise BadInput(f"--gpus-per-trial {args.gpus_per_trial:g}: the cluster has {gpus:g} GPUs;"
                       " lower it or join a cluster with GPUs (--address)")
    if cluster.nodes > 1 and not args.storage_given:
        raise BadInput(f"the cluster has {cluster.nodes} nodes: pass --storage on a filesystem "
                       "every node sees (NFS path) or a cloud URI (s3://bucket/path)")
    workers = args.workers_per_trial
    per_worker_cpu = args.cpus_per_trial / workers
    for flag, amount in (("--cpus-per-trial", args.cpus_per_trial),
                         ("--gpus-per-trial", args.gpus_per_trial)):
        if 0 < amount / workers < RAY_RESOURCE_UNIT:  # Ray counts in 1/10000 units
            each = f" per worker ({workers} workers)" if workers > 1 else ""
            raise BadInput(f"{flag} {amount:g}: {amount / workers:g}{each} is below Ray's "
                           f"smallest unit {RAY_RESOURCE_UNIT:g}; raise it or give 0")
    if workers > max(cpus, gpus, 1):
        raise BadInput(f"--workers-per-trial {workers}: the cluster has {cpus:g} CPUs and "
                       f"{gpus:g} GPUs; each worker is a process with its own model and data, "
                       f"so give at most {int(max(cpus, gpus, 1))}")
    if workers == 1 and args.cpus_per_trial > node_cpus:
        raise BadInput(f"--cpus-per-trial {args.cpus_per_trial:g}: the largest node has "
                       f"{node_cpus:g} CPUs; lower it")
    if workers > 1 and per_worker_cpu > node_cpus:
        raise BadInput(f"--cpus-per-trial {args.cpus_per_trial:g} over {workers} workers needs "
                       f"{per_worker_cpu:g} CPUs per worker; the largest node has {node_cpus:g}")
    if workers > 1 and args.cpus_per_trial + DRIVER_CPU > cpus + 1e-9:
        raise BadInput(f"--workers-per-trial {workers} with --cpus-per-trial "
                       f"{args.cpus_per_trial:g} needs {args.cpus_per_trial + DRIVER_CPU:g} CPUs; "
                       f"the cluster has {cpus:g}")
    limits = [trials]
    if args.cpus_per_trial > 0:
        needed = args.cpus_per_trial + (DRIVER_CPU if workers > 1 else 0.0)
        limits.append(int(cpus // needed + 1e-9))
    if args.gpus_per_trial > 0:
        limits.append(int(gpus // args.gpus_per_trial + 1e-9))
    fit = max(1, min(limits))
    return min(args.concurrency, trials) if args.concurrency else fit


def _has_tune_checkpoint(exp_dir: str) -> bool:
    """Whether Tune checkpointed the experiment (its trials and its searcher's state) at least
    once. A driver killed after Tune wrote ``tuner.pkl`` but before that first checkpoint leaves
    nothing to restore: restoring it anyway gives a search generator without its state, which
    Ray then sizes to one sample, so the resumed search ended after one trial. Such a search
    starts its trials afresh instead (remote storage: assumed checkpointed)."""
    if is_uri(exp_dir):
        return True
    return any(Path(exp_dir).glob("experiment_state-*.json"))


def _restore_hint(exp_dir: str) -> str:
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    newest = _find_newest_experiment_checkpoint(exp_dir)
    states = sorted(Path(exp_dir).glob("experiment_state-*.json")) if not is_uri(exp_dir) else []
    if newest and len(states) > 1:
        return (f"move {Path(newest).name} aside to restore from the previous state, or start "
                "a new --experiment")
    return "start a new --experiment (the finished trials stay in MLflow)"


def check_tune_state_readable(exp_dir: str) -> None:
    """Refuse a --resume whose newest Tune experiment state (the file Ray restores from) is
    not a complete state. Ray itself would log the error and start the whole search again,
    and the trials it forgot would be dropped as orphans."""
    from ray.train._internal.storage import get_fs_and_path
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    try:
        fs, _ = get_fs_and_path(exp_dir)  # local or cloud; ``newest`` is a path on it
        newest = _find_newest_experiment_checkpoint(exp_dir)
    except Exception:  # noqa: BLE001 - not listable here: Ray's restore (guarded) will say
        return
    if newest is None:
        return
    problem = None
    try:
        with fs.open_input_stream(newest) as stream:
            doc = json.loads(stream.readall().decode("utf-8"))
        if not isinstance(doc, dict) or not {"trial_data", "runner_data"} <= doc.keys():
            problem = "not a Tune experiment state"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    if problem:
        raise BadInput(f"--resume: Ray's experiment state {Path(newest).name} in {exp_dir} is "
                       f"damaged ({problem}); {_restore_hint(exp_dir)}")


class TuneRestoreFailed(BadInput):
    """Ray could not restore a search's Tune state on --resume (see refuse_silent_restart)."""


class _RestoreFailureFilter(logging.Filter):
    """Turns the error Ray's TuneController logs when its restore fails (it then starts the
    experiment afresh unless fail_fast is set) into an exception."""

    MESSAGE = "Failed to restore the run state."

    def __init__(self, exp_dir: str):
        super().__init__()
        self.exp_dir = exp_dir

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == self.MESSAGE:
            exc = record.exc_info[1] if record.exc_info else None
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}" if exc else "see log"
            raise TuneRestoreFailed(f"--resume: Ray could not restore the search in "
                                    f"{self.exp_dir} ({why}); {_restore_hint(self.exp_dir)}")
        return True


@contextmanager
def refuse_silent_restart(exp_dir: str) -> Iterator[None]:
    """During a resumed ``Tuner.fit()``: stop with :class:`TuneRestoreFailed` where Ray would
    silently start the whole search again from nothing (re-running every finished trial)."""
    logger = logging.getLogger("ray.tune.execution.tune_controller")
    guard = _RestoreFailureFilter(exp_dir)
    logger.addFilter(guard)
    try:
        yield
    finally:
        logger.removeFilter(guard)


def settings_of(args: SearchSettings, data_path: str, samples: int) -> dict[str, Any]:
    return {"space": args.space, "trials": args.trials, "max_epochs": args.max_epochs,
            "grace_epochs": args.grace_epochs, "searcher": args.searcher,
            "scheduler": args.scheduler, "seed": args.seed, "data": args.data,
            "data_path": data_path, "data_fingerprint": file_fingerprint(data_path),
            "workers_per_trial": args.workers_per_trial,
            "precision": args.precision, "pruned_trials": args.pruned_trials,
            "data_option": args.data_option, "samples": samples,
            "space_file": args.space_file, "prior": args.prior,
            "warm_start": args.warm_start}


def check_same_data(experiment: str, stored: dict[str, Any], data_path: str) -> None:
    """On ``--resume``: the data trials read must be those the search started with (a file
    rewritten since, or synthetic data a newer generator makes differently, would have the
    resumed trials compared with the finished ones on other data). Searches recorded before
    fingerprints were kept are not checked."""
    before = stored.get("data_fingerprint")
    if before is None:
        return
    now = file_fingerprint(data_path)
    if now != before:
        shown = stored.get("data") or "the synthetic data"
        what = "its size or content changed" if now is not None else "it cannot be read"
        raise BadInput(f"--resume: the data of {experiment!r} are not those it started with "
                       f"({shown}, read as {data_path}: {what}); restore the original file, or "
                       "start a new --experiment on these data")


def _stopped_during_setup(exp_dir: str, storage: str, name: str, remote: bool) -> bool:
    """What a search stopped during its set-up leaves: an empty experiment folder, no state."""
    folder = Path(exp_dir)
    return (not remote and folder.is_dir() and not any(folder.iterdir())
            and not state_path(storage, name).exists())


def _close_orphaned_parents(client: Any, experiment_id: str, tags: dict[str, str]) -> None:
    """Mark KILLED the parent runs of earlier starts of this search that were stopped during
    set-up (created in MLflow, never recorded in the experiment state, so never resumable)."""
    keys = (RUN_KIND_TAG, STORAGE_TAG, "mlflow.runName")
    if any("'" in tags[key] for key in keys):  # not expressible in MLflow's filter syntax
        return
    query = " and ".join(f"tags.`{key}` = '{tags[key]}'"
                         for key in keys)
    for run in client.search_runs([experiment_id], filter_string=f"{query} and "
                                  "attributes.status = 'RUNNING'", max_results=100):
        client.set_terminated(run.info.run_id, status="KILLED")


def refuse_a_ray_already_running() -> None:
    """Raise :class:`BadInput` if this process is already connected to Ray (a notebook's own
    ``ray.init()``): the search starts or joins Ray itself, with the working folder and
    settings its trials need, and shuts it down at its end, which would end the caller's
    session too. Ray is not imported for this (a refusal stays fast)."""
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        raise BadInput("Ray is already running in this process (ray.init() was called before "
                       "the search); call ray.shutdown() first: the search starts a local Ray "
                       "itself, or joins a cluster given as address (--address)")


def run_search(settings: SearchSettings) -> SearchResult:
    """Run (or resume) one search (raises :class:`BadInput` for bad settings or data)."""
    refuse_a_ray_already_running()
    held = held_driver_locks()
    environment = dict(os.environ)
    try:
        return _run_search(settings)
    finally:  # the experiment's lock ends with its search (a notebook may run another)
        release_driver_locks(keep=held)
        restore_environment(environment)


#: variables a search sets for the rest of its process: the password a ``postgresql://``
#: --mlflow-uri gave (the URI the search records has none), which reading the store again
#: needs (``--export-best`` after the search, a notebook's report of it)
KEPT_AFTER_A_SEARCH = frozenset({"PGPASSWORD"})


def restore_environment(saved: dict[str, str]) -> None:
    """Put ``os.environ`` back as it was before a search, but for
    :data:`KEPT_AFTER_A_SEARCH`. The search and Ray's start set variables for this search
    only (Tune's output style and loggers, Ray's PYTHONBREAKPOINT and auth mode) that would
    otherwise stay in a notebook's process: its next ``breakpoint()`` would open Ray's
    remote debugger."""
    for key in set(os.environ) - set(saved) - KEPT_AFTER_A_SEARCH:
        del os.environ[key]
    for key, value in saved.items():
        if key not in KEPT_AFTER_A_SEARCH and os.environ.get(key) != value:
            os.environ[key] = value


def _run_search(settings: SearchSettings) -> SearchResult:
    args = settings.checked()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    # MLflow prints two "View run" lines (after one more request) as each trial's run ends on
    # a tracking server; the progress line and the summary say where the runs are.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    storage = args.storage
    remote = is_uri(storage)
    if not remote:
        check_writable_dir(Path(storage), "--storage")
    tracking_uri = resolve_mlflow_uri(args.mlflow_uri)
    state: ExperimentState | None = None
    if args.resume:
        exp_dir = join(storage, args.experiment)
        state_file = state_path(storage, args.experiment)
        if not state_file.exists():
            if _stopped_during_setup(exp_dir, storage, args.experiment, remote):
                raise BadInput(f"--resume: experiment {args.experiment!r} was stopped during its "
                               "set-up, before any trial ran, so there is nothing to resume; "
                               "run the search again without --resume (same --experiment)")
            raise BadInput(f"--resume: no experiment {args.experiment!r} in {storage}; "
                           "check --experiment and --storage")
        try:
            state = ExperimentState.load(state_file)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        hold_driver_lock(state_file, args.experiment)  # refused while its driver still runs
        from ray import tune

        if tune.Tuner.can_restore(exp_dir) and _has_tune_checkpoint(exp_dir):
            check_tune_state_readable(exp_dir)  # before Ray starts: nothing else to undo
        stored = state.data["settings"]
        if args.space is not None and args.space != stored["space"]:
            raise BadInput(f"--resume: experiment {args.experiment!r} searches space "
                           f"{stored['space']!r}, not {args.space!r}; drop --space or fix it")
        if args.space_file is not None:
            raise BadInput("--resume: the space file is stored with the experiment; drop "
                           "--space-file")
        for key in STORED_SETTINGS:
            setattr(args, key, stored.get(key, getattr(args, key, None)))
        tracking_uri = state.data["tracking_uri"]
        if tracking_uri.startswith(("http://", "https://", "postgresql")):
            tracking_uri = resolve_mlflow_uri(tracking_uri)  # reachable, the password found
        elif tracking_uri.startswith("sqlite:///") and \
                not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
            # MLflow would make an empty store there, and the search's runs would be missing
            raise BadInput(f"--resume: the MLflow store of {args.experiment!r}, {tracking_uri}, "
                           "does not exist (moved or deleted?); put it back there to resume")
        space = get_space(args.space)
        spec = get_dataset(space.dataset)
        data_path = prepare_data(space, args.data, args.samples, args.seed, args.data_option,
                                 tracking_uri)
        check_same_data(args.experiment, stored, data_path)
        samples = args.samples
    else:
        args.space = args.space or "resnet1d"
        space = get_space(args.space)
        spec = get_dataset(space.dataset)
        name = args.experiment or f"{space.name}-{datetime.now():%Y%m%d-%H%M%S}"
        args.experiment = name
        exp_dir = join(storage, name)
        if _stopped_during_setup(exp_dir, storage, name, remote):
            # nothing was recorded, so nothing is lost: the search starts again from scratch
            print(f"experiment {name!r} was stopped during its set-up before; starting it again")
            Path(exp_dir).rmdir()
        elif state_path(storage, name).exists():
            raise BadInput(f"experiment {name!r} already exists in {storage}; continue it with "
                           "--resume or choose another --experiment")
        elif not remote and Path(exp_dir).exists():
            raise BadInput(f"{exp_dir} already exists and is not a search of this platform "
                           "(no recorded state); choose another --experiment or move it aside")
        samples = args.samples or spec.default_samples
        if args.space_file is not None:  # parsed now; checked against the space with its data
            from search.space_file import read

            args.space_file = read(args.space_file, space.name)
        if args.prior not in ("seed", "none"):  # its form now, its names with the data's shape
            from search.prior import parse_prior_file

            parse_prior_file(args.prior, space.name)
            args.prior = str(Path(args.prior).resolve())
        if args.warm_start:
            from search.warm_start import check_sources

            check_sources(args.warm_start, space.name, tracking_uri)
        # A user's file is validated before Ray starts; the synthetic default is generated
        # only once the resource request is known to fit (bad input creates no file).
        data_path = prepare_data(space, args.data, samples, args.seed, args.data_option,
                                 tracking_uri) if args.data is not None else None
        if data_path is not None:  # the space's model takes these data: before Ray starts
            check_space_fits_data(space, spec.load(data_path, args.seed, args.data_option),
                                  args.data)

    knowledge: dict[str, Any] = {}  # the prior's centre and the warm-start trials
    # the parent run's status before a --resume made it RUNNING; a fresh one was created here
    parent_status_before = "FAILED"

    def prepare_data_and_space() -> Any:
        """Data (generated or imported), the narrowed space, the prior and the warm start:
        all numeric work, done before Ray starts (see below)."""
        nonlocal data_path, space
        if data_path is None:
            data_path = prepare_data(space, None, samples, args.seed, args.data_option,
                                     tracking_uri)
        loaded = spec.load(data_path, args.seed, args.data_option)
        info = loaded.info
        if args.data is None:  # a user's file was checked before Ray started
            check_space_fits_data(space, loaded, "(the synthetic default)")
        if args.space_file:
            from search.space_file import narrowed_space

            space = narrowed_space(space, info, args.space_file)
        from search.prior import prior_centre
        from search.warm_start import collect

        # A resumed search's searcher comes back from Ray's checkpoint with its prior and its
        # warm-start trials; they are read again only in case Ray never checkpointed it, so a
        # source gone since then costs the resume nothing but that.
        for key, read in (("prior", lambda: prior_centre(args.prior, space, info)),
                          ("warm", lambda: collect(args.warm_start, space, info, tracking_uri)
                           if args.warm_start else None)):
            try:
                knowledge[key] = read()
            except BadInput as exc:
                if not args.resume:
                    raise
                print(f"warning: {exc} (kept from the search's checkpoint)")
        return info

    def prepare_tracking() -> ExperimentState:
        """Experiment folder and MLflow runs (overlaps Ray's start in local mode)."""
        nonlocal state, parent_status_before
        if state is None:
            if not remote:
                Path(exp_dir).mkdir(parents=True, exist_ok=False)
            state = start_tracking(args, space, tracking_uri, data_path, samples)
        else:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(state.data["tracking_uri"])
            parent_status_before = client.get_run(state.data["parent_run_id"]).info.status
            client.update_run(state.data["parent_run_id"], status="RUNNING")
        return state

    import ray

    try:
        if args.address:
            dashboard = init_ray(args)
            concurrency = check_resources(args, args.trials, cluster_snapshot())
            info = prepare_data_and_space()
            state = prepare_tracking()
        else:
            # The local node's resources are known before it starts, so the request is
            # checked first. The data come next, before Ray starts: Ray starts its processes
            # with fork() (a preexec_fn), and numpy's OpenBLAS hangs for good when a fork
            # happens during a threaded BLAS call in another thread (its fork handler stops
            # the BLAS threads that call waits on; seen in CI: data generation stuck at one
            # matrix product for 300 s). Only the MLflow set-up (a new SQLite store migrates
            # its schema, a second or more), which does no BLAS work, runs while Ray starts.
            concurrency = check_resources(args, args.trials, local_snapshot())
            info = prepare_data_and_space()
            with ThreadPoolExecutor(max_workers=1) as pool:
                tracked = pool.submit(prepare_tracking)
                dashboard = init_ray(args)
                state = tracked.result()
        return _search(args, space, info, state, exp_dir, data_path, concurrency, dashboard,
                       knowledge)
    except Exception as exc:
        full = full_disk_error(exc)
        # the tracker's writes, or the driver's own (a resume's reconciliation, the summary)
        lost = tracking_failure(exc) if full is None else None
        reason = lost.reason if lost is not None else (
            transport_failure(exc) if full is None else None)
        # No parent run is left RUNNING by a start that ended here, unless the store is what
        # failed (closing the run would only wait out MLflow's retries once more).
        if state is not None and reason is None:
            _close_parent_left_running(state, parent_status_before)
        if reason is not None and state is None:  # the search's set-up: nothing to resume
            raise SearchStopped(
                f"the MLflow store {shown_uri(tracking_uri)} stopped answering ({reason}); "
                "start it again (or give another --mlflow-uri) and run the same command again"
            ) from exc
        if reason is not None:
            raise SearchStopped(
                f"the MLflow store {shown_uri(state.data['tracking_uri'])} failed during the "
                f"search ({reason}); every trial's checkpoints and results are kept in "
                f"{args.storage}. Once the store answers again, continue with: python "
                f"launch.py --resume --experiment {args.experiment} --storage {args.storage}"
            ) from exc
        if full is not None:
            where = f" ({full.filename})" if full.filename else ""
            resume = (f"python launch.py --resume --experiment {args.experiment} --storage "
                      f"{args.storage}") if state is not None else "the same command again"
            raise OutOfSpace(f"{full.strerror or 'no space left on device'}{where}; free "
                             f"space (or raise the quota) on the --storage, --mlflow-uri or "
                             f"data cache disk, then continue with: {resume}") from exc
        raise
    finally:
        ray.shutdown()


def tracking_failure(exc: BaseException) -> TrackingFailed | None:
    """The :class:`TrackingFailed` that ``exc`` is, or was raised from or during."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TrackingFailed):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _close_parent_left_running(state: ExperimentState, status_before: str) -> None:
    """Give the search's parent run, if it is still RUNNING after a start that raised (a bug,
    a damaged Ray state on --resume), the status it had before: FAILED for one created by this
    start, KILLED for a search whose driver had died; --resume makes it RUNNING again."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(state.data["tracking_uri"])
        parent = state.data["parent_run_id"]
        if client.get_run(parent).info.status == "RUNNING":
            client.set_terminated(parent, status="KILLED" if status_before == "RUNNING"
                                  else status_before)
    except Exception as exc:  # noqa: BLE001 - the original error is the one to report
        print(f"warning: could not close the search's MLflow run ({type(exc).__name__})",
              file=sys.stderr)


def start_tracking(args: SearchSettings, space: Space, tracking_uri: str,
                   data_path: str, samples: int) -> ExperimentState:
    """Create the MLflow experiment and parent run and the durable experiment state."""
    from mlflow.tracking import MlflowClient

    experiment_id = open_mlflow_experiment(tracking_uri, args.experiment)
    client = MlflowClient(tracking_uri)
    tags = run_tags(args, space)
    tags["mlflow.runName"] = f"{args.experiment} (search)"
    tags[STORAGE_TAG] = args.storage if is_uri(args.storage) else str(Path(args.storage).resolve())
    # this start has no recorded state (it is fresh), so a RUNNING parent of the same search
    # is left over from a start stopped between creating it and recording the state
    _close_orphaned_parents(client, experiment_id, tags)
    parent = client.create_run(experiment_id, tags=tags)
    settings = settings_of(args, data_path, samples)
    if getattr(space, "upstream", None):  # data an earlier stage's model computes: its bytes
        settings["data_fingerprint"] = None  # may differ on another machine's hardware
    from mlflow.entities import Param

    client.log_batch(parent.info.run_id, params=[
        Param(k, str(v)[:6000]) for k, v in settings.items()])
    if args.space_file:  # the narrowed space, as the user wrote it
        client.log_text(parent.info.run_id, Path(args.space_file["path"]).read_text(),
                        "space_file.yaml")
    state = ExperimentState(state_path(args.storage, args.experiment), {
        "parent_run_id": parent.info.run_id,
        "mlflow_experiment_id": experiment_id,
        "tracking_uri": tracking_uri,
        "settings": settings,
        "trials": {},
    })
    state.save()
    hold_driver_lock(state.path, args.experiment)  # a --resume meanwhile is refused
    return state


def run_tags(args: SearchSettings, space: Space) -> dict[str, str]:
    return {RUN_KIND_TAG: "search", "space": space.name, "searcher": args.searcher,
            "scheduler": args.scheduler,
            "seed": str(args.seed), "git_commit": git_commit(), "metric": space.metric,
            "mode": space.mode}


def _search(args: SearchSettings, space: Space, info: Any, state: ExperimentState,
            exp_dir: str, data_path: str, concurrency: int, dashboard: str | None,
            knowledge: dict[str, Any]) -> SearchResult:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from search.checkpoint_repair import RestoreFromNewestCheckpoint
    from search.distributed import run_distributed_trial
    from search.progress import ProgressLine
    from search.searcher import PlatformOptunaSearch
    from search.summary import finish
    from search.trial import TrialContext, run_trial, trial_dirname
    from tracking.optuna_store import StudyMirror, journal_path
    from tracking.tracker import MlflowTracker  # Ray Tune: imported once input is checked

    workers = args.workers_per_trial
    ctx = TrialContext(space=space.name, data_path=data_path, data_options=args.data_option,
                       max_epochs=args.max_epochs, seed=args.seed, precision=args.precision,
                       workers=workers, cpus_per_worker=args.cpus_per_trial / workers,
                       gpus_per_worker=args.gpus_per_trial / workers,
                       train_storage=join(args.storage, f"{args.experiment}_train"))
    # A multi-worker trial's own process only drives Ray Train: its workers hold the resources.
    resources = ({"cpu": DRIVER_CPU} if workers > 1
                 else {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    body = run_distributed_trial if workers > 1 else run_trial
    trainable = tune.with_resources(tune.with_parameters(body, ctx=ctx), resources)
    print(f"experiment {args.experiment}: space {space.name}, {args.trials} trials, "
          f"{concurrency} at a time, up to {args.max_epochs} epochs, searcher {args.searcher}, "
          f"scheduler {args.scheduler}")
    print(f"data: {data_path}")
    if dashboard:
        print(f"Ray dashboard: {dashboard}  (login token: `ray get-auth-token`)")
    print(f"MLflow: {shown_uri(state.data['tracking_uri'])} (experiment {args.experiment!r})")
    journal = journal_path(args.storage)
    print(f"Optuna study {args.experiment!r}: optuna-dashboard {journal} --host 127.0.0.1")
    sys.stdout.flush()

    # Tune's own loggers: result.json (read back for the results table, and by anyone looking
    # at a trial folder) is kept; the CSV and TensorBoard copies of every result are not
    # written (MLflow holds every metric). The profile of the overhead benchmark showed their
    # per-result writes and flushes on Tune's event loop, which every trial waits on at each
    # report. SCITUNE_TUNE_LOGGERS=all brings them back. Set for a resumed search too: its
    # callbacks (JsonLoggerCallback among them) come back from the saved state.
    if os.environ.get("SCITUNE_TUNE_LOGGERS", "json") != "all":
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    resuming = args.resume and tune.Tuner.can_restore(exp_dir) and _has_tune_checkpoint(exp_dir)
    if resuming:
        try:
            tuner = tune.Tuner.restore(exp_dir, trainable=trainable,
                                       resume_unfinished=True, resume_errored=False)
        except Exception as exc:  # noqa: BLE001 - Ray raises many types for a damaged state
            raise BadInput(f"--resume: Ray's experiment state in {exp_dir} is damaged "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                           f"{_restore_hint(exp_dir)}") from None
    else:
        import optuna

        # no "[I ...] A new study created in memory" line beside the progress line
        optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose
                                     else optuna.logging.WARNING)
        sampler = make_sampler(args.searcher, args.seed)
        centre = knowledge.get("prior")
        points = [dict(space.seed_config)]
        if centre is not None:
            from search.prior import PriorSampler

            sampler = PriorSampler(sampler, centre, seed=args.seed)
            if not same_config(centre, space.seed_config):
                points.append(centre)  # a file's configuration is evaluated as it is, too
        searcher = PlatformOptunaSearch(
            space=partial(space.suggest, info=info),
            metric=space.metric,
            mode=space.mode,
            points_to_evaluate=points,
            sampler=sampler,
            max_epochs=args.max_epochs,
            tell_pruned=args.pruned_trials == "pruned",
            mirror=StudyMirror(journal, args.experiment, space.mode, fresh=True),
            hyperband=(args.grace_epochs, args.max_epochs, REDUCTION_FACTOR)
            if args.scheduler == "hyperband" else None,
        )
        warm = knowledge.get("warm")
        if warm is not None:
            searcher.add_evidence(warm.trials)
            print(warm.describe(args.warm_start))
        tracker = MlflowTracker(state.data["tracking_uri"], str(state.path), args.max_epochs,
                                run_tags(args, space), space.metric,
                                seed_config=dict(space.seed_config))
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=make_scheduler(args.scheduler, args.max_epochs, args.grace_epochs,
                                         searcher),
                metric=space.metric,
                mode=space.mode,
                num_samples=args.trials,
                max_concurrent_trials=concurrency,
                # Reused actors skip per-trial start-up (~0.2 s vs seconds); a trial that
                # drives Ray Train cannot be reset in place, and its start-up is Train's anyway.
                reuse_actors=args.workers_per_trial == 1,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=args.experiment,
                storage_path=args.storage,
                # --verbose: Ray's own tables; otherwise one progress line
                callbacks=[RestoreFromNewestCheckpoint(), tracker, JsonLoggerCallback()]
                + ([] if args.verbose else [ProgressLine(args.trials, space.metric, space.mode,
                                                         args.max_epochs)]),
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=2, checkpoint_score_attribute=space.metric,
                    checkpoint_score_order=space.mode),
                failure_config=tune.FailureConfig(max_failures=args.max_failures),
                verbose=2 if args.verbose else 0,
            ),
        )
    with sigterm_as_interrupt(), refuse_silent_restart(exp_dir) if resuming else nullcontext():
        results = tuner.fit()
    # Ray is shut down after the summary (by the caller), never beside it: a thread still
    # touching Ray's core worker once it is shut down ends the process with exit code 1
    # ("The core worker has already been shutdown"), seen on a loaded CI machine.
    return finish(args, space, state, results)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
