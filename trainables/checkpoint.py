"""What a trial leaves and how it ends, independent of Ray: checkpoint files (tensors only),
flat configuration names, and the failures that end a trial without retry."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import torch

from datasets.base import DataSplits
from trainables.loop import FIGURES_KEY, FitSettings, fit

CHECKPOINT_FILE = "checkpoint.pt"
FIGURES_DIR = "figures"
FAILURE_KEY = "failure_reason"


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


def save_state(state: Mapping[str, Any], directory: str) -> str:
    """Write a checkpoint state into ``directory``; return the file path.

    Figures the loop attached (``figures``: name → PNG bytes, or a deferred
    :class:`trainables.figures.Picture`) go beside it as ``figures/<name>.png`` or
    ``figures/<name>.picture.npz``, where the driver picks them up (and draws the deferred ones)
    for MLflow."""
    from trainables.figures import PICTURE_SUFFIX, Picture, encode_picture

    state = dict(state)
    pictures = state.pop(FIGURES_KEY, None) or {}
    if pictures:
        os.makedirs(os.path.join(directory, FIGURES_DIR), exist_ok=True)
        for name, picture in pictures.items():
            if isinstance(picture, Picture):
                try:
                    filename, content = f"{name}{PICTURE_SUFFIX}", encode_picture(picture)
                except TypeError:  # an argument the file cannot hold: draw it here instead
                    try:
                        filename, content = f"{name}.png", picture.png()
                    except Exception as exc:  # noqa: BLE001 - a picture never costs a checkpoint
                        print(f"warning: picture {name} not drawn: {exc}", file=sys.stderr)
                        continue
            else:
                filename, content = f"{name}.png", picture
            with open(os.path.join(directory, FIGURES_DIR, filename), "wb") as f:
                f.write(content)
    path = os.path.join(directory, CHECKPOINT_FILE)
    torch.save(state, path)
    return path


def load_state(directory: str) -> dict[str, Any]:
    """Read a checkpoint state written by :func:`save_state` (tensors only, no pickles)."""
    return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu",
                      weights_only=True)


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

