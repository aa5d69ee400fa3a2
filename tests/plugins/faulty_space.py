"""A test-only space that injects faults (loaded through ``SCITUNE_PLUGINS=faulty_space``).

Trial number n (in the order the searcher proposes them; 0 is the seed configuration) gets
fault ``FAULTS[n % len(FAULTS)]``: ``none``; ``nan`` (loss becomes NaN in epoch 2);
``oom`` (an impossible allocation in epoch 2); ``raise_once`` (a RuntimeError in epoch 2 of
the first attempt only, recorded with a marker file in ``$SCITUNE_FAULT_DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces import Space, register

FAULTS = ("none", "nan", "oom", "raise_once")


class FaultyModel(nn.Module):
    def __init__(self, config: dict[str, Any], info: Any):
        super().__init__()
        self.fault = config["fault"]
        self.marker = Path(os.environ.get("SCITUNE_FAULT_DIR", "/nonexistent")) / config["tag"]
        self.linear = nn.Linear(info.input_shape[-1], info.num_classes)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.steps += 1
        in_epoch_two = self.training and int(self.steps) > self.steps_per_epoch
        if in_epoch_two and self.fault == "nan":
            return self.linear(x.flatten(1)) * float("nan")
        if in_epoch_two and self.fault == "oom":
            torch.empty(2**45)
        if in_epoch_two and self.fault == "raise_once" and not self.marker.exists():
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.touch()
            raise RuntimeError("injected crash")
        return self.linear(x.flatten(1))

    steps_per_epoch = 2  # tiny data set: 2 training batches per epoch


def suggest(trial: Any, info: Any) -> dict[str, Any]:
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    trial.suggest_categorical("batch_size", (32,))
    return {"fault": FAULTS[trial.number % len(FAULTS)], "tag": f"t{trial.number}"}


register(Space(
    name="faulty",
    suggest=suggest,
    seed_config={"lr": 5e-3, "batch_size": 32},
    build=FaultyModel,
    kind="classify",
    dataset="xrd",
    metric="val_top1",
    mode="max",
    description="test-only: injects NaN, OOM and crashes",
))
