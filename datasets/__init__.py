"""Data sets: HDF5 schemas, memory-mapped readers, synthetic generators and importers.

A data set is one file in this package that calls :func:`register` with a
:class:`~datasets.base.DatasetSpec`. Modules are imported on first use of the registry.
"""

from __future__ import annotations

import importlib
import pkgutil

from datasets.base import (
    DataError,
    DataInfo,
    DatasetSpec,
    DataSplits,
)

__all__ = ["DataError", "DataInfo", "DataSplits", "DatasetSpec", "get_dataset", "register"]

_REGISTRY: dict[str, DatasetSpec] = {}
_LOADED = False


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a data set to the registry (called once at import of its module)."""
    _REGISTRY[spec.name] = spec
    return spec


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    _LOADED = True


def get_dataset(name: str) -> DatasetSpec:
    """The registered data set ``name``."""
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown data set {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]
