"""The Ray Tune function trainable: one trial = one call of :func:`trainables.loop.fit`.

The data set is opened once per worker process and kept in a module global, so reused actors
(``reuse_actors=True``) and later trials on the same worker pay nothing to reach it. Each
epoch is reported with a small checkpoint (model + optimizer state dicts); a restarted trial
resumes after the epoch of its last checkpoint.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from datasets import get_dataset
from datasets.base import DataSplits
from search_spaces import get_space
from trainables.checkpoint import fit_or_fail, flatten, load_state, save_state
from trainables.loop import FitSettings

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
    #: data-parallel workers per trial (> 1: a Ray Train TorchTrainer, see search.distributed)
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    #: where multi-worker trials keep their Ray Train runs (checkpoints), one per trial
    train_storage: str = ""


def load_data(ctx: TrialContext) -> DataSplits:
    """The trial's data splits, memory-mapped once per worker process."""
    space = get_space(ctx.space)
    key = (space.dataset, ctx.data_path, tuple(sorted(ctx.data_options.items())))
    if key not in _DATA:
        _DATA[key] = get_dataset(space.dataset).load(ctx.data_path, ctx.seed, ctx.data_options)
    return _DATA[key]


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (Ray's default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


def trial_device(gpus: float) -> str:
    """``cuda`` when this process was given a GPU, else ``cpu``."""
    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable of a one-process trial (search.distributed: N workers)."""
    from ray import tune

    space = get_space(ctx.space)
    data = load_data(ctx)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(directory)

    import ray

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, float], new_state: dict[str, Any] | None) -> None:
        metrics = {**metrics, "node_id": node_id}  # where the trial ran (kept out of MLflow)
        if new_state is None:  # an earlier epoch reported again: nothing to checkpoint
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_state(new_state, directory)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    settings = FitSettings(max_epochs=ctx.max_epochs, seed=ctx.seed,
                           device=trial_device(ctx.gpus_per_worker), precision=ctx.precision)
    fit_or_fail(space, flatten(config), data, settings, report, state,
                report_failure=tune.report)


