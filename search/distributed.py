"""Multi-worker (DDP) trials: a Tune trial that runs a Ray Train ``TorchTrainer``.

Train V2 no longer runs inside ``Tuner`` directly: the Tune trial is a small driver function
that builds and fits a ``TorchTrainer`` whose workers run the same :func:`trainables.loop.fit`
as single-process trials, with the model wrapped in DDP (gloo on CPU, NCCL on GPU) and the
train split sharded evenly across workers. ``TuneReportCallback`` forwards rank 0's metrics
to Tune. Batch size is per worker: the global batch is ``batch_size × workers``.

Checkpoints are written by rank 0 into the Train run (named after the Tune trial, so a
restarted trial or a resumed search finds it) and restored on every rank. The workers do not
wait for the driver: after a driver is stopped they can train and checkpoint several more
epochs whose results never reach it. So a restored trial first reports the epochs its
checkpoint holds again (their metrics travel in the checkpoint); the tracker and the searcher
take each epoch once, so every epoch reaches MLflow exactly once.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from search.trial import TrialContext, load_data
from trainables.checkpoint import fit_or_fail, flatten, load_state, save_state
from trainables.loop import FitSettings


def worker_loop(payload: dict[str, Any]) -> None:
    """Runs on every Train worker: one shard of the data, DDP model, rank-0 checkpoints."""
    import ray.train
    import ray.train.torch

    from search_spaces import get_space

    ctx: TrialContext = payload["ctx"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    space = get_space(ctx.space)
    data = load_data(ctx)
    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(directory)

    def report(metrics: dict[str, float], new_state: dict[str, Any] | None) -> None:
        if rank == 0 and new_state is not None:
            with tempfile.TemporaryDirectory() as directory:
                save_state(new_state, directory)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report(metrics)

    device = ray.train.torch.get_device()
    settings = FitSettings(max_epochs=ctx.max_epochs, seed=ctx.seed, device=str(device),
                           precision=ctx.precision, shard=(rank, world),
                           replay_restored_epoch=True)
    fit_or_fail(space, flatten(payload["config"]), data, settings, report, state,
                report_failure=ray.train.report, prepare_model=ray.train.torch.prepare_model)


def ddp_backend(gpus_per_worker: float) -> str:
    """The process-group backend of a DDP trial: NCCL when every worker has a whole GPU of
    its own; gloo on CPU and when workers share a GPU (NCCL refuses two ranks on one device,
    gloo all-reduces CUDA tensors through host memory)."""
    return "nccl" if gpus_per_worker >= 1 else "gloo"


def run_distributed_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune trial body for ``ctx.workers`` > 1."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from search_spaces import get_space

    space = get_space(ctx.space)
    use_gpu = ctx.gpus_per_worker > 0
    resources = {"CPU": ctx.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = ctx.gpus_per_worker
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"config": config, "ctx": ctx},
        scaling_config=ray.train.ScalingConfig(num_workers=ctx.workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        torch_config=TorchConfig(backend=ddp_backend(ctx.gpus_per_worker)),
        run_config=ray.train.RunConfig(
            name=f"train_{tune.get_context().get_trial_id()}",
            storage_path=ctx.train_storage or os.path.join(tempfile.gettempdir(), "scitune"),
            callbacks=[TuneReportCallback()],
            # the best epoch's checkpoint is kept (Ray keeps the newest as well, to resume);
            # kept by age only, a trial whose best epoch came early lost it
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=space.metric,
                checkpoint_score_order=space.mode),
        ),
    )
    trainer.fit()
