"""What a search is asked to do (:class:`SearchSettings`) and what it gives back
(:class:`SearchResult`): the plain objects between the command line (or a notebook) and
:func:`search.run_search`."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import BadInput
from common.paths import check_experiment_name, is_uri
from common.seeds import check_seed

SEARCHERS = ("tpe", "random", "qmc", "gp", "cmaes")
SCHEDULERS = ("asha", "hyperband", "median", "fifo")
PRECISIONS = ("fp32", "bf16", "fp16")
PRUNED_TRIALS = ("pruned", "complete")


@dataclass
class SearchSettings:
    """One search; every field is a ``launch.py`` flag of the same name (see README.md)."""

    space: str | None = None  # None: resnet1d, or the stored space on resume
    trials: int = 20
    max_epochs: int = 9
    grace_epochs: int = 1
    space_file: Any = None  # path of a YAML file; on a running search, its parsed contents
    searcher: str = "tpe"
    prior: str = "seed"  # seed, none, or FILE.yaml (see search.prior)
    warm_start: Any = None  # "A,B" or a list of earlier experiments (see search.warm_start)
    pruned_trials: str = "pruned"
    scheduler: str = "asha"
    data: str | None = None
    data_option: dict[str, str] = field(default_factory=dict)
    samples: int | None = None
    experiment: str | None = None
    mlflow_uri: str | None = None
    storage: str | None = None  # None: ./ray_results
    resume: bool = False
    seed: int = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    concurrency: int | None = None
    workers_per_trial: int = 1
    precision: str = "fp32"
    max_failures: int = 1
    address: str | None = None
    verbose: bool = False
    #: whether ``storage`` was given (a multi-node cluster needs a shared one); set by checked()
    storage_given: bool = field(default=False, repr=False)
    is_checked: bool = field(default=False, repr=False)

    def checked(self) -> SearchSettings:
        """A copy with every setting checked (raises :class:`BadInput`, creates nothing) and
        ``storage`` made absolute."""
        if self.is_checked:
            return dataclasses.replace(self, data_option=dict(self.data_option))
        s = dataclasses.replace(self)
        _check_types(s)
        s.data_option = dict(s.data_option)
        for name in ("trials", "max_epochs", "grace_epochs", "workers_per_trial"):
            if not isinstance(getattr(s, name), int) or getattr(s, name) <= 0:
                raise BadInput(f"--{name.replace('_', '-')} must be a whole number > 0")
        if s.samples is not None and (not isinstance(s.samples, int) or s.samples <= 0):
            raise BadInput("--samples must be a whole number > 0")
        if s.concurrency is not None and (not isinstance(s.concurrency, int) or s.concurrency <= 0):
            raise BadInput("--concurrency must be a whole number > 0")
        for name, allowed in (("searcher", SEARCHERS), ("scheduler", SCHEDULERS),
                              ("precision", PRECISIONS), ("pruned_trials", PRUNED_TRIALS)):
            if getattr(s, name) not in allowed:
                raise BadInput(f"--{name.replace('_', '-')} {getattr(s, name)}: choose one of "
                               f"{', '.join(allowed)}")
        for name in ("cpus_per_trial", "gpus_per_trial"):
            value = getattr(s, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise BadInput(f"--{name.replace('_', '-')} must be a finite number >= 0")
        for name in ("data", "space_file", "storage", "mlflow_uri", "address"):
            value = getattr(s, name)  # an empty shell variable: "--data $FILE" with FILE unset
            if isinstance(value, str) and not value.strip():
                what = {"address": "an address", "mlflow_uri": "a URI"}.get(name, "a path")
                raise BadInput(f"--{name.replace('_', '-')} {value!r}: empty; give {what} or "
                               "leave the flag out")
        from search.warm_start import parse_names

        s.warm_start = parse_names(s.warm_start) or None
        if not isinstance(s.prior, str) or not s.prior:
            raise BadInput("--prior: give seed, none or FILE.yaml")
        if s.prior not in ("seed", "none") and not Path(s.prior).is_file():
            raise BadInput(f"--prior {s.prior}: no such file; give seed, none, or an "
                           "--export-best FILE.yaml")
        check_seed(s.seed)
        if s.max_failures < 0:
            raise BadInput("--max-failures must be >= 0")
        if s.grace_epochs > s.max_epochs:
            raise BadInput(f"--grace-epochs {s.grace_epochs} exceeds --max-epochs "
                           f"{s.max_epochs}; lower it")
        if s.cpus_per_trial == 0 and s.gpus_per_trial == 0:
            raise BadInput("--cpus-per-trial and --gpus-per-trial are both 0; a trial needs one")
        if s.gpus_per_trial > 1 and s.gpus_per_trial != int(s.gpus_per_trial):
            raise BadInput("--gpus-per-trial above 1 must be a whole number")
        if s.resume and not s.experiment:
            raise BadInput("--resume needs --experiment NAME (the experiment to continue)")
        if s.experiment is not None:
            check_experiment_name(s.experiment)
        s.storage_given = s.storage_given or s.storage is not None
        if is_uri(s.storage):
            try:
                import pyarrow.fs

                pyarrow.fs.FileSystem.from_uri(s.storage)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
                raise BadInput(f"--storage {s.storage}: unusable URI ({exc}); use a shared "
                               "folder or a URI such as s3://bucket/path") from None
        else:
            storage = Path(s.storage or "ray_results")
            s.storage = str(storage if storage.is_absolute() else Path.cwd() / storage)
        s.is_checked = True
        return s


#: fields that are text (a path may be given as ``pathlib.Path``) or None
TEXT_FIELDS = ("space", "data", "experiment", "mlflow_uri", "storage", "address", "space_file")


def _check_types(s: SearchSettings) -> None:
    """The Python API's values of the wrong type, named as their flag (paths become text)."""
    for name in TEXT_FIELDS:
        value = getattr(s, name)
        if isinstance(value, os.PathLike):
            setattr(s, name, os.fspath(value))
        elif value is not None and not isinstance(value, str):
            raise BadInput(f"--{name.replace('_', '-')} {value!r}: give text (a name, path or "
                           "URI) or None")
    if not isinstance(s.data_option, Mapping) or not all(isinstance(k, str)
                                                         for k in s.data_option):
        raise BadInput(f"--data-option {s.data_option!r}: give a mapping of option name to "
                       "value, e.g. {'length': '1024'}")
    if s.warm_start is not None and not (isinstance(s.warm_start, str) or (
            isinstance(s.warm_start, list | tuple)
            and all(isinstance(n, str) for n in s.warm_start))):
        raise BadInput(f"--warm-start {s.warm_start!r}: give 'A,B' or a list of experiment names")
    for name in ("resume", "verbose"):
        if not isinstance(getattr(s, name), bool):
            raise BadInput(f"--{name} {getattr(s, name)!r}: give True or False")
    if isinstance(s.max_failures, bool) or not isinstance(s.max_failures, int):
        raise BadInput(f"--max-failures {s.max_failures!r}: give a whole number >= 0")


@dataclass
class SearchResult:
    """A finished (or interrupted) search.

    ``exit_code``: 0 done, 1 no trial reported the objective, 130 interrupted (resume it).
    ``trials``: one row per trial, best first (:meth:`tracking.record.SearchRecord.ranked`
    with the trial's folder name as ``trial``): ``trial_id``, ``run_id``, ``status``,
    ``best`` = best value of the objective over its epochs, ``epochs``, ``compute_seconds``,
    ``is_seed``, ``failed``, ``failure_reason``, then its configuration as ``config/<name>``
    columns."""

    experiment: str
    exit_code: int
    metric: str
    mode: str
    tracking_uri: str
    parent_run_id: str
    storage: str
    trials: Any  # pandas.DataFrame
    best_config: dict[str, Any] | None = None
    best_value: float | None = None
    best_checkpoint: Path | str | None = None  # a URI (str) on cloud storage
    best_run_id: str | None = None
    model_uri: str | None = None
    seed_value: float | None = None

    @property
    def run_ids(self) -> dict[str, str]:
        """MLflow run id of every trial that has one (trial id → run id)."""
        rows = self.trials[self.trials["run_id"].notna()]
        return dict(zip(rows["trial_id"], rows["run_id"], strict=True))
