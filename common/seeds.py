"""The one range of seeds every part accepts: Optuna's samplers seed numpy's legacy
``RandomState``, which takes 0 to 2**32 - 1, so that is the range of ``--seed`` everywhere."""

from __future__ import annotations

from typing import Any

from common.errors import BadInput

SEED_MAX = 2**32 - 1


def check_seed(value: Any, where: str = "--seed") -> int:
    """``value`` as a seed, or :class:`BadInput` naming ``where`` and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise BadInput(f"{where} {value!r}: give a whole number from 0 to {SEED_MAX}")
    return value
