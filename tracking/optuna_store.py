"""Every search's Optuna study, kept live in a journal file Optuna's own tools read.

Ray's ``OptunaSearch`` samples from an in-memory study (fast, and pickled with Tune's
experiment state so a resumed search continues exactly). :class:`StudyMirror` copies each
trial into a persistent study as it happens: created with its parameters and distributions
when Ray asks for it, an intermediate value per reported epoch, and its final state
(COMPLETE, PRUNED by the scheduler, FAIL) at the end. One journal file per ``--storage``
folder holds one study per experiment, named after it, so

    optuna-dashboard <storage>/optuna.log

shows every search in that folder, with learning curves, while it runs. A journal append
costs under a millisecond (a SQLite study ~25 ms per trial, measured here), so the mirror
writes synchronously on Tune's event loop.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

JOURNAL_FILE = "optuna.log"
RAY_TRIAL_ATTR = "ray_trial_id"


def journal_path(storage: str | os.PathLike[str]) -> Path:
    """The journal of a ``--storage`` folder (for a cloud URI: beside the driver's state)."""
    from tracking.state import state_path

    storage = str(storage)
    if "://" in storage and not storage.startswith("file://"):
        return state_path(storage, "_").parent.parent / JOURNAL_FILE
    return Path(storage.removeprefix("file://")) / JOURNAL_FILE


def open_storage(path: str | os.PathLike[str]):
    """An Optuna ``JournalStorage`` on the file ``path`` (created on first write)."""
    import optuna

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(_whole_line_backend()(str(path)))


def _whole_line_backend() -> type:
    """Optuna's ``JournalFileBackend`` whose appends leave whole lines only.

    A write cut short (disk full, quota, a kill mid-write) left a line without its end; the
    next append, by any search sharing the file, continued that line, and every study in the
    file became unreadable (``JSONDecodeError``). Here, under the journal's own lock, a torn
    tail is dropped before writing (Optuna never read it), and a failed write is cut back to
    where it began."""
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal._file import get_lock_file

    class WholeLineJournalFileBackend(JournalFileBackend):
        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            with get_lock_file(self._lock):
                start = drop_torn_tail(self._file_path)
                try:
                    _write_lines(self, logs)
                except BaseException:
                    os.truncate(self._file_path, start)
                    raise

    def _write_lines(backend: Any, logs: list[dict[str, Any]]) -> None:  # Optuna's write
        import json

        data = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with open(backend._file_path, "ab") as f:
            f.write(data.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    return WholeLineJournalFileBackend


def drop_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut a last line that has no end (an append cut short) off the file; return its size."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return size
        keep = size
        while keep > 0:  # back to the end of the last whole line
            step = min(65536, keep)
            f.seek(keep - step)
            block = f.read(step)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = keep - step + cut + 1
                break
            keep -= step
        f.truncate(keep)
        return keep


def load_study(storage: str | os.PathLike[str], experiment: str):
    """The persistent study of ``experiment`` in the ``--storage`` folder ``storage``.

    Raises ``KeyError`` when the folder has no such study."""
    import optuna

    path = journal_path(storage)
    if not path.exists():
        raise KeyError(f"no Optuna journal {path}")
    try:
        return optuna.load_study(study_name=experiment, storage=open_storage(path))
    except KeyError:
        raise KeyError(f"no study {experiment!r} in {path}") from None


def containing(distribution: Any, value: Any) -> Any:
    """``distribution`` widened to hold ``value``, which an enqueued configuration (the
    seed's, a prior's, a warm start's) may place outside the range its space suggests from:
    Optuna samples with it, but refuses to store a trial whose value lies outside its
    distribution (a ``resnet1d`` search of 1024-point patterns lost its journal at the seed:
    ``stages/3/stride`` is 3 there, where the space strides at most 2)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    try:
        if distribution._contains(distribution.to_internal_repr(value)):
            return distribution
    except (TypeError, ValueError):
        pass
    if isinstance(distribution, CategoricalDistribution):
        return CategoricalDistribution([*distribution.choices, value])
    if isinstance(distribution, IntDistribution | FloatDistribution) and \
            isinstance(value, int | float) and not isinstance(value, bool):
        low, high = min(distribution.low, value), max(distribution.high, value)
        log = distribution.log and low > 0
        step = distribution.step
        if step is not None and ((value - distribution.low) / step) % 1 != 0:
            step = 1 if isinstance(distribution, IntDistribution) else None
        if isinstance(distribution, IntDistribution):
            return IntDistribution(int(low), int(high), log=log, step=1 if log else step or 1)
        return FloatDistribution(low, high, log=log, step=None if log else step)
    return distribution


class StudyMirror:
    """Writes one search's trials into a persistent Optuna study (see the module doc).

    Picklable (with the searcher, on every Tune experiment checkpoint): the storage is
    reopened on first use after unpickling. Write errors are logged, never raised: the
    mirror is a view and must not stop a search."""

    def __init__(self, path: str | os.PathLike[str], study_name: str, direction: str,
                 fresh: bool = True):
        self.path = str(path)
        self.study_name = study_name
        self.direction = direction
        self._fresh = fresh
        self._ids: dict[str, int] = {}  # Ray trial id -> storage trial id
        self._storage: Any = None
        self._study_id: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_storage=None, _study_id=None, _broken=False)  # a resume tries again
        return state

    def _open(self) -> tuple[Any, int]:
        if self._storage is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study" line
            storage = open_storage(self.path)
            if self._fresh:  # a new experiment reusing the name of a deleted one
                try:
                    optuna.delete_study(study_name=self.study_name, storage=storage)
                except KeyError:
                    pass
                self._fresh = False
            study = optuna.create_study(storage=storage, study_name=self.study_name,
                                        direction="maximize" if self.direction == "max"
                                        else "minimize", load_if_exists=True)
            self._storage, self._study_id = storage, study._study_id
            if not self._ids:  # resumed from a state saved before any trial: find them
                for trial in storage.get_all_trials(self._study_id, deepcopy=False):
                    if RAY_TRIAL_ATTR in trial.user_attrs:
                        self._ids[trial.user_attrs[RAY_TRIAL_ATTR]] = trial._trial_id
        return self._storage, self._study_id

    def _guard(self, what: str, fn: Any, *args: Any) -> None:
        if getattr(self, "_broken", False):
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - a view never stops the search
            # once, not per trial: the search goes on without its Optuna copy
            self._broken = True
            print(f"warning: Optuna journal {self.path}: {what} failed ({exc}); the search "
                  "goes on without it", file=sys.stderr)

    def started(self, ray_trial_id: str, params: dict[str, Any],
                distributions: dict[str, Any]) -> None:
        """A trial was suggested: create it RUNNING with its parameters."""
        self._guard("create trial", self._started, ray_trial_id, params, distributions)

    def _started(self, ray_trial_id: str, params: dict[str, Any], distributions: dict[str, Any]):
        import optuna

        storage, study_id = self._open()
        if ray_trial_id in self._ids:
            return
        distributions = {name: containing(dist, params[name]) if name in params else dist
                         for name, dist in distributions.items()}
        template = optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING, params=params, distributions=distributions,
            user_attrs={RAY_TRIAL_ATTR: ray_trial_id})
        self._ids[ray_trial_id] = storage.create_new_trial(study_id, template_trial=template)

    def reported(self, ray_trial_id: str, step: int, value: float) -> None:
        """An epoch's objective value (an Optuna intermediate value at ``step``)."""
        if ray_trial_id in self._ids and math.isfinite(value):
            self._guard("report", self._reported, ray_trial_id, step, value)

    def _reported(self, ray_trial_id: str, step: int, value: float) -> None:
        storage, _ = self._open()
        trial_id = self._ids[ray_trial_id]
        if not storage.get_trial(trial_id).state.is_finished():
            storage.set_trial_intermediate_value(trial_id, step, value)

    def finished(self, ray_trial_id: str, state: Any, value: float | None) -> None:
        """The trial's final state (``optuna.trial.TrialState``) and value."""
        if ray_trial_id in self._ids:
            self._guard("finish trial", self._finished, ray_trial_id, state, value)

    def _finished(self, ray_trial_id: str, state: Any, value: float | None) -> None:
        import optuna

        storage, _ = self._open()
        trial_id = self._ids[ray_trial_id]
        if storage.get_trial(trial_id).state.is_finished():
            return  # replayed after a resume
        complete = state == optuna.trial.TrialState.COMPLETE and value is not None \
            and math.isfinite(value)
        if state == optuna.trial.TrialState.COMPLETE and not complete:
            state = optuna.trial.TrialState.FAIL
        storage.set_trial_state_values(trial_id, state, [value] if complete else None)

    def forget_others(self, known: set[str]) -> None:
        """After a resume: trials started after Tune's last saved state are gone (Tune asks
        for replacements); their RUNNING copies are marked FAIL and tagged ``orphaned``."""
        self._guard("reconcile", self._forget_others, known)

    def _forget_others(self, known: set[str]) -> None:
        import optuna

        storage, study_id = self._open()
        for trial in storage.get_all_trials(study_id, deepcopy=False,
                                            states=(optuna.trial.TrialState.RUNNING,)):
            ray_id = trial.user_attrs.get(RAY_TRIAL_ATTR)
            if ray_id not in known:
                storage.set_trial_user_attr(trial._trial_id, "orphaned", True)
                storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
                self._ids.pop(ray_id, None)
