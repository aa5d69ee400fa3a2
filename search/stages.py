"""Multi-stage searches: a space's earlier stages (:class:`search_spaces.Upstream`) resolved
before any trial starts, and the data prepared with them.

``ewm`` builds on an ``ae`` (the best checkpoint of an earlier ``ae`` search named by
``--data-option ae_experiment=NAME``, else the ``ae`` seed configuration trained now on the
training split), ``mmnn`` on ``cnn`` and ``pheno_nn`` searches (optional). The data sets get
the models as :class:`datasets.base.UpstreamModel` and never read MLflow or train themselves.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from common.errors import DataError
from datasets import get_dataset
from datasets.base import DataSplits, UpstreamModel
from datasets.importing import group_as_file, mappable_copy
from search_spaces import Space, Upstream, get_space, registry
from tracking.record import SearchRecord
from trainables.loop import FitSettings, fit

DEFAULT_TRAIN_EPOCHS = 10


def train_epochs(options: Mapping[str, str], option: str) -> int:
    """Epochs of a stage trained on the spot (``--data-option {option}=N``, default 10)."""
    try:
        epochs = int(options.get(option, DEFAULT_TRAIN_EPOCHS))
    except ValueError:
        raise DataError(f"--data-option {option} must be an integer") from None
    if epochs < 1:
        raise DataError(f"--data-option {option} must be at least 1")
    return epochs


def train_seed_configuration(space_name: str, data: DataSplits, epochs: int, seed: int
                             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The space's seed configuration trained now on ``data`` (progress on stderr); returns
    (config, model state dict)."""
    space = get_space(space_name)
    config = dict(space.seed_config)
    kept: dict[str, Any] = {}

    def report(metrics: dict[str, float], state: dict[str, Any]) -> None:
        print(f"  stage 1 ({space_name}, seed configuration): epoch {int(metrics['epoch'])}/"
              f"{epochs} {space.metric} {metrics[space.metric]:.4f}", file=sys.stderr, flush=True)
        kept["state"] = state["model"]

    fit(space, config, data, FitSettings(max_epochs=epochs, seed=seed, figure_every=0), report)
    return config, kept["state"]


def resolve(stages: Sequence[Upstream], options: Mapping[str, str], seed: int,
            tracking_uri: str | None = None) -> dict[str, UpstreamModel]:
    """The models of ``stages`` (raises :class:`DataError` for a missing or wrong earlier
    search before anything is written)."""
    resolved: dict[str, UpstreamModel] = {}
    for stage in stages:
        build = get_space(stage.space).build
        experiment = options.get(stage.option)
        if experiment:
            record = SearchRecord.latest(experiment, stage.space, stage.option, tracking_uri)
            config, state = record.best_config(), record.best_model_state()
            resolved[stage.name] = UpstreamModel(
                space=stage.space, source=f"MLflow run {record.parent_run_id}",
                weights=lambda data, c=config, s=state: (c, s), build=build)
        elif stage.train_epochs_option:
            epochs = train_epochs(options, stage.train_epochs_option)

            def train(data: DataSplits | None, name: str = stage.space, n: int = epochs
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
                if data is None:
                    raise ValueError(f"the {name!r} stage is trained now: it needs the data")
                return train_seed_configuration(name, data, n, seed)

            resolved[stage.name] = UpstreamModel(
                space=stage.space, source=f"seed configuration, {epochs} epochs, seed {seed}",
                weights=train, build=build)
    return resolved


def stages_of_dataset(dataset: str) -> tuple[Upstream, ...]:
    """The stages declared by the spaces searching ``dataset`` (for preparing a data set
    without naming a space, as tests and benchmarks do)."""
    stages: dict[str, Upstream] = {}
    for space in registry().values():
        if space.dataset == dataset:
            stages.update({s.name: s for s in space.upstream})
    return tuple(stages.values())


def prepare_data(space: Space | str, path: str | None, samples: int, seed: int,
                 options: Mapping[str, str], tracking_uri: str | None = None) -> str:
    """``prepare`` of the space's data set (or of the data set named), its stages resolved."""
    if isinstance(space, Space):
        dataset, stages = space.dataset, space.upstream
    else:
        dataset, stages = space, stages_of_dataset(space)
    spec = get_dataset(dataset)
    upstream = resolve(stages, options, seed, tracking_uri)
    given = path
    try:
        if path is not None:
            path = group_as_file(path)  # --data FILE::/GROUP: a file linking to that group
        if upstream:
            prepared = spec.prepare(path, samples, seed, options, upstream=upstream)
        else:
            prepared = spec.prepare(path, samples, seed, options)
        # a user's compressed or chunked file: read through one memory-mapped copy
        return prepared if given is None else mappable_copy(prepared, given)
    except DataError as exc:
        if path == given:
            raise
        raise DataError(str(exc).replace(str(path), str(given))) from None  # name the user's
    except OSError as exc:
        # HDF5's read failures (a damaged chunk, a filter that cannot decode it) are
        # OSErrors without errno; a full disk or a missing folder keeps its errno and its
        # own handling
        if given is None or exc.errno is not None or "read data" not in str(exc):
            raise
        reason = str(exc).strip().splitlines()[0]
        raise DataError(f"--data {given}: HDF5 cannot read it ({reason}); the file is damaged: "
                        "re-create or re-copy it") from None


def check_space_fits_data(space: Space, data: DataSplits, source: str) -> None:
    """Refuse, before Ray starts, data the space's model cannot take: the seed configuration
    is built on the meta device (no memory, no weights) for the data's shape, and a
    classifier's or auto-encoder's forward pass runs on two meta samples. A shape the model
    refuses (e.g. ``dcgan``'s 40 × 40 events given barrel-only 16 × 40 files) becomes one
    :class:`DataError` line naming ``source``, instead of the same failure in every trial.
    An operation the meta device does not implement skips the check (never a false refusal).
    """
    import numpy as np
    import torch

    from trainables.loop import input_keys

    config = dict(space.seed_config)
    if not config:  # no seed configuration to build
        return
    shape = "×".join(str(s) for s in data.info.input_shape)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. an upstream stage's weights loaded into meta
            model = space.build(config, data.info)
            if space.kind in ("classify", "autoencode") and len(data.train) >= 2:
                idx = np.sort(np.asarray(data.train[:2]))
                arrays = [np.asarray(data.batch(key, idx, config)) for key in input_keys(model)]
                # as the loop feeds them (trainables.loop.fetch): float32, integer counts too
                inputs = [torch.from_numpy(a.astype(np.float32)).to("meta") for a in arrays]
                model.eval()(*inputs)
    except (NotImplementedError, KeyError, AttributeError):
        # the meta device lacks an operation, or the seed configuration is incomplete (a
        # space may register none): nothing is known about the data, so nothing is refused
        return
    except (ValueError, RuntimeError, TypeError, IndexError) as exc:
        if "meta" in str(exc).lower():  # the meta device, not the data, is the problem
            return
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"--data {source}: space {space.name!r} cannot take these data "
                        f"(inputs {shape}): {reason}; use data of the shape the space needs "
                        f"or another space") from None
