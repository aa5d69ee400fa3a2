"""The registry of search spaces.

A space is one file in this package that calls :func:`register` at import. Every module of
the package is imported when the registry is first read, so adding a model needs no edit
here (the same pattern as timm's ``@register_model``).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import UnknownSpaceError

TASK_KINDS = ("classify", "regress", "autoencode", "gan", "ewm")


@dataclass(frozen=True)
class Upstream:
    """A space's dependency on an earlier stage's model (two-stage searches).

    ``--data-option {option}=NAME`` takes the best checkpoint of the finished ``space`` search
    in MLflow experiment ``NAME``; without it the stage is skipped, or, when
    ``train_epochs_option`` is set, the stage's seed configuration is trained on the spot for
    that option's epochs (default 10). The search layer resolves it before any trial starts
    (:mod:`search.stages`) and hands the data set the model under ``name``."""

    name: str
    space: str
    option: str
    train_epochs_option: str | None = None


@dataclass(frozen=True)
class Space:
    """Everything the platform needs to search one model.

    Attributes:
        name: registry key, used as ``--space NAME``.
        suggest: Optuna define-by-run function ``suggest(trial, info) -> dict | None``; parameter
            names with ``/`` become nested config entries. ``info`` describes the data set
            (input shape, number of classes) so every sampled configuration builds.
        seed_config: the seed code's own choice, a flat dict with the same names ``suggest``
            uses; it is always evaluated as the first trial.
        build: ``build(config, info) -> torch.nn.Module`` (the trainable's model factory).
        kind: task kind; selects the step functions of the shared training loop.
        dataset: name of a registered data set in :mod:`datasets`.
        metric: objective reported every epoch.
        mode: ``"max"`` or ``"min"``.
        description: one line for ``--list-spaces``.
        extra_metrics: other metrics shown in the final summary.
        upstream: earlier stages whose models the data set builds on (:class:`Upstream`).
    """

    name: str
    suggest: Callable[..., dict[str, Any] | None]
    seed_config: Mapping[str, Any]
    build: Callable[..., Any]
    kind: str
    dataset: str
    metric: str
    mode: str
    description: str = ""
    extra_metrics: tuple[str, ...] = field(default_factory=tuple)
    upstream: tuple[Upstream, ...] = ()

    def __post_init__(self) -> None:
        if not self.kind:  # built-in kinds: TASK_KINDS; plugins may register more
            raise ValueError(f"space {self.name!r}: kind must be named")
        if self.mode not in ("max", "min"):
            raise ValueError(f"space {self.name!r}: mode must be 'max' or 'min'")


_REGISTRY: dict[str, Space] = {}
_LOADED = False


def register(space: Space) -> Space:
    """Add ``space`` to the registry (called once at import of its module)."""
    if space.name in _REGISTRY and _REGISTRY[space.name] is not space:
        raise ValueError(f"space {space.name!r} registered twice")
    _REGISTRY[space.name] = space
    return space


PLUGINS_ENV = "SCITUNE_PLUGINS"


def _load_all() -> None:
    """Import every space module of this package, then the modules named in
    ``$SCITUNE_PLUGINS`` (comma-separated; spaces kept outside the repository)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)


def registry() -> dict[str, Space]:
    """All registered spaces by name (imports every space module once)."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_space(name: str) -> Space:
    """The registered space ``name``; raises :class:`UnknownSpaceError` otherwise."""
    spaces = registry()
    if name not in spaces:
        raise UnknownSpaceError(
            f"unknown space {name!r}: choose one of {', '.join(spaces)} (see --list-spaces)"
        )
    return spaces[name]
