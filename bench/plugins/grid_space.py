"""Benchmark-only space ``resnet1d_grid``: the seed's hand method, a grid of the seed
configuration's neighbours (learning rate ×½, ×1, ×2 and batch size 32/64/128; everything
else the seed's). Trial 0 is the seed itself (the platform evaluates it first); trial ``n``
takes the ``n``-th other grid point, so ``--trials 9 --scheduler fifo --searcher random``
runs the whole grid, every trial to full epochs.

Loaded with ``SCITUNE_PLUGINS=grid_space`` (PYTHONPATH=bench/plugins).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from search_spaces import get_space, register

BASE = get_space("resnet1d")
LR_FACTORS = (0.5, 1.0, 2.0)
BATCH_SIZES = (32, 64, 128)


def grid_points() -> list[dict[str, Any]]:
    """The grid's configurations other than the seed's, in a fixed order."""
    seed = BASE.seed_config
    points = [dict(seed, lr=seed["lr"] * f, batch_size=b)
              for f, b in itertools.product(LR_FACTORS, BATCH_SIZES)]
    return [p for p in points if p != dict(seed)]


def suggest(trial: Any, info: Any) -> None:
    points = grid_points()
    point = dict(BASE.seed_config) if trial.number == 0 else points[(trial.number - 1) % len(points)]
    for key, value in point.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            trial.suggest_categorical(key, (value,))
        elif isinstance(value, int):
            trial.suggest_int(key, value, value)
        else:
            trial.suggest_float(key, value, value)


register(dataclasses.replace(BASE, name="resnet1d_grid", suggest=suggest,
                             description="benchmark: grid of the seed's neighbours"))
