"""Benchmark-only space ``sleep``: each epoch sleeps a fixed time, so the platform's own cost
is what remains. Loaded with ``SCITUNE_PLUGINS=sleep_space`` (PYTHONPATH=bench/plugins).

``SCITUNE_BENCH_EPOCH_S`` sets the sleep per epoch. The objective is a smooth function of ``x``
that improves with epochs, so ASHA and Optuna's pruner have something to prune.
"""

from __future__ import annotations

import os
import time
from typing import Any

from torch import nn

from search_spaces import Space, register
from trainables.loop import Kind, register_kind


def objective(x: float, epoch: int) -> float:
    """The value a trial with parameter ``x`` reports after ``epoch`` epochs (max is best)."""
    return (1.0 - (x - 0.3) ** 2) * (1.0 - 0.5 ** epoch)


class SleepKind(Kind):
    def train_epoch(self, model, data, opt, cfg, rng, ctx):
        time.sleep(float(os.environ.get("SCITUNE_BENCH_EPOCH_S", "0.2")))
        return {}

    def evaluate(self, model, data, split, cfg, ctx):
        model.calls = getattr(model, "calls", 0) + 1
        return {"score": objective(float(cfg["x"]), model.calls)}


def suggest(trial: Any, info: Any) -> None:
    trial.suggest_float("x", 0.0, 1.0)
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)


register_kind("sleep", SleepKind())
register(Space(name="sleep", suggest=suggest, seed_config={"x": 0.5, "lr": 5e-3},
               build=lambda config, info: nn.Linear(info.input_shape[-1], 1), kind="sleep", dataset="xrd",
               metric="score", mode="max", description="benchmark: fixed sleep per epoch"))
