"""A trained model in MLflow's own format (``mlflow.pytorch``), loadable from its run.

``mlflow.pytorch.load_model("runs:/<run id>/model")`` gives the ``torch.nn.Module`` back.
The signature and input example describe ``forward``: a few validation inputs of the data
set (one array, or one per named input for multi-input models) and what the model returns
for them. For GANs ``forward`` is the discriminator; ``model.sample(n, device)`` draws events.

The model is pickled (``serialization_format="pickle"``): a traced ``pt2`` graph cannot hold
every model here (the boosted trees behind ``etmiss_gbdt``, conditional generators), and the
loader needs this project's packages importable, which ``code_paths`` ships with the model.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from datasets.base import DataSplits

MODEL_ARTIFACT = "model"
REPO_ROOT = Path(__file__).resolve().parents[1]
#: The packages a pickled model's classes come from (shipped so it loads anywhere).
CODE_PACKAGES = ("trainables", "datasets", "search_spaces", "common")


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model (skips MLflow's slow inference of them)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("torch", "numpy", "scipy", "scikit-learn", "h5py"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return out


def example_inputs(model: Any, data: DataSplits, config: Mapping[str, Any],
                   n: int = 4) -> dict[str, np.ndarray]:
    """``n`` validation inputs for each of the model's named inputs (float32 arrays)."""
    from trainables.loop import input_keys

    idx = np.sort(np.asarray(data.val)[:n])
    return {key: np.asarray(data.batch(key, idx, config), dtype=np.float32)
            for key in input_keys(model)}


@contextlib.contextmanager
def tracking_uri_in_force(uri: str) -> Iterator[None]:
    """``mlflow.set_tracking_uri(uri)`` for the block, then the caller's setting back (the
    module's URI and ``MLFLOW_TRACKING_URI``, which MLflow sets with it): a notebook that
    runs a search keeps logging to its own store."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    saved_uri = utils._tracking_uri  # None where only the variable or the default applies
    saved_variable = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)
        if saved_variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_variable


def log_model(tracking_uri: str, run_id: str, model: Any, data: DataSplits,
              config: Mapping[str, Any]) -> str:
    """Log ``model`` (on CPU, eval mode) as ``model/`` of MLflow run ``run_id`` of the store
    at ``tracking_uri``; returns ``runs:/<run_id>/model``. The caller's MLflow state is left
    as it was: its tracking URI, and its active run (MLflow keeps one stack of active runs
    a thread, so the logging runs in a thread of its own; a notebook's ``mlflow.start_run()``
    made it fail with "Run ... is already active")."""
    with tracking_uri_in_force(tracking_uri), ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_log_model, run_id, model, data, config).result()


def _log_model(run_id: str, model: Any, data: DataSplits, config: Mapping[str, Any]) -> str:
    import mlflow
    import torch
    from mlflow.models import infer_signature

    model = model.to("cpu").eval()
    inputs = example_inputs(model, data, config)
    tensors = [torch.from_numpy(v) for v in inputs.values()]
    with torch.no_grad():
        output = model(*tensors)
    if isinstance(output, tuple | list):
        output = output[0]
    output = output.detach().float().numpy()
    example: Any = next(iter(inputs.values())) if len(inputs) == 1 else inputs
    signature = infer_signature(example, output)
    quiet = logging.getLogger("mlflow.pytorch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the pickle-format caution: documented in the module doc
    try:
        with mlflow.start_run(run_id=run_id):
            mlflow.pytorch.log_model(
                model, name=MODEL_ARTIFACT, signature=signature, input_example=example,
                serialization_format="pickle", pip_requirements=pip_requirements(),
                code_paths=[str(REPO_ROOT / p) for p in CODE_PACKAGES])
    finally:
        quiet.setLevel(level)
    return f"runs:/{run_id}/{MODEL_ARTIFACT}"


def load_checkpoint_model(space: Any, config: Mapping[str, Any], data: DataSplits,
                          checkpoint_file: str | Path) -> Any:
    """The model of a checkpoint written by the training loop (``weights_only`` load), made
    ready for inference by its kind (boosted trees are re-grown from their iterations)."""
    import torch

    from trainables.loop import get_kind

    state = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
    model = space.build(dict(config), data.info)
    model.load_state_dict(state["model"])
    get_kind(space.kind).ready_for_inference(model, data, dict(config))
    return model.eval()
