"""The Ray Tune function trainable: one trial = one call of :func:`trainables.loop.fit`.

The data set is opened once per worker process and kept in a module global, so reused actors
(``reuse_actors=True``) and later trials on the same worker pay nothing to reach it. Each
epoch is reported with a small checkpoint (model + optimizer state dicts); a restarted trial
resumes after the epoch of its last checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from datasets import get_dataset
from datasets.base import DataSplits
from search_spaces import get_space
from trainables.loop import FIGURES_KEY, FitSettings, fit

CHECKPOINT_FILE = "checkpoint.pt"
FIGURES_DIR = "figures"
_DATA: dict[tuple, DataSplits] = {}


@dataclass(frozen=True)
class TrialContext:
    """Settings shared by every trial of a search (passed with ``tune.with_parameters``)."""

    space: str
    data_path: str
    data_options: Mapping[str, str] = field(default_factory=dict)
    max_epochs: int = 10
    seed: int = 0
    precision: str = "fp32"
    #: data-parallel workers per trial (> 1: a Ray Train TorchTrainer, see trainables.distributed)
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    #: where multi-worker trials keep their Ray Train runs (checkpoints), one per trial
    train_storage: str = ""


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config (as Optuna names with ``/`` produce) → flat ``a/b/c`` keys."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def load_data(ctx: TrialContext) -> DataSplits:
    """The trial's data splits, memory-mapped once per worker process."""
    space = get_space(ctx.space)
    key = (space.dataset, ctx.data_path, tuple(sorted(ctx.data_options.items())))
    if key not in _DATA:
        _DATA[key] = get_dataset(space.dataset).load(ctx.data_path, ctx.seed, ctx.data_options)
    return _DATA[key]


def save_state(state: Mapping[str, Any], directory: str) -> str:
    """Write a checkpoint state into ``directory``; return the file path.

    Figures the loop attached (``figures``: name → PNG bytes) go beside it as
    ``figures/<name>.png``, where the driver picks them up for MLflow."""
    state = dict(state)
    pictures = state.pop(FIGURES_KEY, None) or {}
    if pictures:
        os.makedirs(os.path.join(directory, FIGURES_DIR), exist_ok=True)
        for name, png in pictures.items():
            with open(os.path.join(directory, FIGURES_DIR, f"{name}.png"), "wb") as f:
                f.write(png)
    path = os.path.join(directory, CHECKPOINT_FILE)
    torch.save(state, path)
    return path


def load_state(directory: str) -> dict[str, Any]:
    """Read a checkpoint state written by :func:`save_state` (tensors only, no pickles)."""
    return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu",
                      weights_only=True)


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (Ray's default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


def trial_device(gpus: float) -> str:
    """``cuda`` when this process was given a GPU, else ``cpu``."""
    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable (one process; see trainables.distributed for N workers)."""
    from ray import tune

    if ctx.workers > 1:
        from trainables.distributed import run_distributed_trial

        run_distributed_trial(config, ctx)
        return
    space = get_space(ctx.space)
    data = load_data(ctx)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(directory)

    import ray

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, float], new_state: dict[str, Any]) -> None:
        metrics = {**metrics, "node_id": node_id}  # where the trial ran (kept out of MLflow)
        with tempfile.TemporaryDirectory() as directory:
            save_state(new_state, directory)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    settings = FitSettings(max_epochs=ctx.max_epochs, seed=ctx.seed,
                           device=trial_device(ctx.gpus_per_worker), precision=ctx.precision)
    fit_or_fail(space, flatten(config), data, settings, report, state,
                report_failure=tune.report)


def fit_or_fail(space: Any, config: dict[str, Any], data: DataSplits, settings: FitSettings,
                report: Any, state: dict[str, Any] | None, report_failure: Any,
                prepare_model: Any = None) -> None:
    """:func:`fit`, turning divergence and out-of-memory into a final failure report.

    Divergence and out-of-memory are properties of the configuration: retrying cannot help,
    so the trial ends at once with its reason (the objective NaN, ``failure_reason`` set) and
    the searcher is told it failed. Any other exception propagates, so Ray retries the trial
    from its last checkpoint (``--max-failures``)."""
    last_epoch = int(state["epoch"]) if state else 0

    def tracked(metrics: dict[str, float], new_state: dict[str, Any]) -> None:
        nonlocal last_epoch
        report(metrics, new_state)
        last_epoch = int(metrics["epoch"])

    try:
        fit(space, config, data, settings, report=tracked, state=state,
            prepare_model=prepare_model)
    except Exception as exc:  # noqa: BLE001 - classified by terminal_failure
        reason = terminal_failure(exc)
        if reason is None:
            raise
        report_failure({space.metric: float("nan"), "epoch": last_epoch + 1,
                        FAILURE_KEY: reason})


FAILURE_KEY = "failure_reason"


def terminal_failure(exc: BaseException) -> str | None:
    """The reason a trial must stop without retry (divergence, out of memory), else None."""
    from trainables.loop import TrialDiverged

    if isinstance(exc, TrialDiverged):
        return f"diverged: {exc}"
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return f"out of memory: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
    if isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc):
        return f"out of memory: {str(exc).splitlines()[0][:200]}"
    return None

