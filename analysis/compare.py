"""``python launch.py compare NAME [NAME...]``: the best trials of several searches side by side.

Everything is read back from the MLflow tracking store through its search API (no Ray results,
no local state files), so searches run on other machines against the same tracking server
compare the same way. A search's figures come from the summary metrics its parent run got at
the end (``trials``, ``failed``, ``trial_epochs``, ``compute_seconds``, ``best_<metric>``,
``seed_<metric>``); a search without them (interrupted: KILLED, still RUNNING, or FAILED) is
summarised from its trial runs so far and marked ``*`` (ties for the best value go to the
earliest-started trial; the seed's value is shown only where its trial can be told: see
:meth:`tracking.record.SearchRecord.seed_run`).

The searches and their trials are read through :class:`tracking.record.SearchRecord` (MLflow's
client API: runs, tags, metric histories); the CSV is written by the standard library's
``csv`` and the terminal table by hand (pandas would add nothing a fixed-width table needs).
``mlflow.search_runs`` gives a run's last metric values only, and a trial's best value needs
its whole history, so trial runs are read with ``get_metric_history``.

Names are MLflow experiment names, or shell-style globs (``'resnet1d-*'``) over them. A name
that matches nothing is an error (exit 2) even when others match: a typo must not silently drop
a row from a table or CSV that goes into a paper.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from common.errors import BadInput
from tracking import record

#: known experiment names listed in the error for a name that matches nothing
KNOWN_SHOWN = 12
GLOB_CHARS = "*?["
CSV_COLUMNS = ("experiment", "space", "searcher", "scheduler", "trials", "trials_requested", "failed",
               "metric", "mode", "best", "seed", "best_minus_seed", "trial_epochs", "compute_seconds",
               "wall_seconds", "status", "from_trials", "start", "best_run_id", "search_run_id")


@dataclass
class Row:
    """One search, as compared."""

    experiment: str
    search_run_id: str
    space: str | None
    searcher: str | None
    scheduler: str | None
    trials: int | None
    trials_requested: int | None
    failed: int | None
    metric: str | None
    mode: str | None
    best: float | None
    seed: float | None
    trial_epochs: int | None
    compute_seconds: float | None
    wall_seconds: float | None
    status: str
    from_trials: bool
    start_ms: int | None
    best_run_id: str | None

    @property
    def best_minus_seed(self) -> float | None:
        return self.best - self.seed if self.best is not None and self.seed is not None else None

    @property
    def start(self) -> datetime | None:
        return datetime.fromtimestamp(self.start_ms / 1000) if self.start_ms else None

    def record(self) -> dict[str, Any]:
        """The CSV row (missing values as empty cells)."""
        values = {name: getattr(self, name) for name in CSV_COLUMNS if name not in ("start",)}
        values["start"] = self.start.isoformat(timespec="seconds") if self.start else None
        return {k: ("" if values[k] is None else values[k]) for k in CSV_COLUMNS}


# -- reading MLflow -----------------------------------------------------------------------------

def open_client(uri: str | None) -> Any:
    """A client for ``--mlflow-uri`` (default ``sqlite:///<cwd>/mlflow.db``); a SQLite file
    must already exist (compare creates no store)."""
    from mlflow.tracking import MlflowClient

    from tracking.record import existing_store_uri

    return MlflowClient(existing_store_uri(uri))


def known_experiments(client: Any) -> list[Any]:
    """Active experiments, most recently updated first."""
    found, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token,
                                         order_by=["last_update_time DESC"])
        found.extend(page)
        token = page.token
        if not token:
            return found


def select(client: Any, patterns: list[str]) -> list[tuple[Any, bool]]:
    """The experiments ``patterns`` name, in order (globs expand sorted by name); raises
    :class:`BadInput` naming every pattern that matches nothing."""
    chosen, seen, missing = [], set(), []
    known: list[Any] | None = None
    for pattern in patterns:
        exact = client.get_experiment_by_name(pattern)
        if exact is not None and exact.lifecycle_stage != "active":
            exact = None
        if exact is None and any(c in pattern for c in GLOB_CHARS):
            known = known if known is not None else known_experiments(client)
            matched = sorted((e for e in known if fnmatch.fnmatchcase(e.name, pattern)),
                             key=lambda e: e.name)
            if not matched:
                missing.append(pattern)
            for experiment in matched:
                if experiment.name not in seen and experiment.name != "Default":
                    seen.add(experiment.name)
                    chosen.append((experiment, True))
            continue
        if exact is None:
            missing.append(pattern)
        elif pattern not in seen:
            seen.add(pattern)
            chosen.append((exact, False))
    if missing:
        known = known if known is not None else known_experiments(client)
        names = [e.name for e in known if e.name != "Default"]
        listed = ", ".join(names[:KNOWN_SHOWN]) + (f", ... ({len(names) - KNOWN_SHOWN} more)"
                                                   if len(names) > KNOWN_SHOWN else "")
        which = ", ".join(repr(m) for m in missing)
        raise BadInput(f"no MLflow experiment {which} in {client.tracking_uri}; known: "
                       f"{listed or 'none'}")
    return chosen


def search_parents(client: Any, experiment: Any) -> list[Any]:
    """The parent runs of the searches in MLflow experiment ``experiment``, oldest first."""
    return record.search_parents(client, experiment.experiment_id)


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def from_trials(client: Any, parent: Any, metric: str | None, mode: str) -> dict[str, Any]:
    """The summary figures of a search computed from its trial runs (as search.summary
    computes them from Ray's results): finished and failed trials, trial-epochs (finite
    objective values), compute seconds (sum of ``epoch_seconds``), the best value over every
    trial's history and its run, and the seed configuration's latest value."""
    search = record.SearchRecord.of_parent(client, parent, parent.info.experiment_id)
    trials = search.trials
    best = search.best()
    seed_run = search.seed_run()
    seed_value = _finite(seed_run.data.metrics.get(metric)) if seed_run and metric else None
    done = trials["status"].isin(["FINISHED", "FAILED"]) if len(trials) else trials
    return {"trials": int(done.sum()) if len(trials) else 0,
            "failed": int((trials["status"] == "FAILED").sum()) if len(trials) else 0,
            "trial_epochs": int(trials["epochs"].sum()) if len(trials) else 0,
            "compute_seconds": float(trials["compute_seconds"].sum()) if len(trials) else 0.0,
            "best": None if best is None else float(best["best"]),
            "best_run_id": None if best is None else best["run_id"], "seed": seed_value}


def summarize(client: Any, name: str, parent: Any) -> Row:
    """The row of one search (its parent run's summary, else computed from its trials)."""
    tags, params, metrics, info = parent.data.tags, parent.data.params, parent.data.metrics, parent.info
    search = record.SearchRecord.of_parent(client, parent, name)
    metric, mode = search.objective
    summarised = search.summarised
    if summarised:
        figures = {"trials": _int(metrics.get("trials")), "failed": _int(metrics.get("failed")),
                   "trial_epochs": _int(metrics.get("trial_epochs")),
                   "compute_seconds": _finite(metrics.get("compute_seconds")),
                   "best": _finite(metrics.get(f"best_{metric}")),
                   "seed": _finite(metrics.get(f"seed_{metric}")),
                   "best_run_id": tags.get("best_run_id")}
    else:
        figures = from_trials(client, parent, metric, mode)
    end = info.end_time if info.status != "RUNNING" else int(time.time() * 1000)
    wall = (end - info.start_time) / 1000 if end and info.start_time else None
    return Row(experiment=name, search_run_id=info.run_id, space=tags.get("space"),
               searcher=tags.get("searcher"), scheduler=tags.get("scheduler"),
               trials_requested=_int(params.get("trials")), metric=metric, mode=mode,
               wall_seconds=wall, status=info.status, from_trials=not summarised,
               start_ms=info.start_time, **figures)


def collect(client: Any, patterns: list[str], storage: str | None = None
            ) -> tuple[list[Row], list[str]]:
    """Rows for ``patterns`` in the order given, and notes for the reader; with ``storage``,
    only the searches whose ``--storage`` it was."""
    from tracking.store import STORAGE_TAG

    rows, notes = [], []
    for experiment, by_glob in select(client, patterns):
        parents = search_parents(client, experiment)
        if storage is not None and parents:
            parents = [p for p in parents if p.data.tags.get(STORAGE_TAG) == storage]
            if not parents:
                if by_glob:
                    continue
                raise BadInput(f"experiment {experiment.name!r} holds no search with --storage "
                               f"{storage}; drop --storage or name its folder")
        if not parents:
            if by_glob:
                continue
            raise BadInput(f"MLflow experiment {experiment.name!r} holds no scitune search run "
                           "(tag scitune.run=search)")
        if len(parents) > 1:
            notes.append(f"{experiment.name!r} holds {len(parents)} searches (one --experiment "
                         "name reused with another --storage); each has a row, oldest first")
        rows.extend(summarize(client, experiment.name, p) for p in parents)
    if not rows:
        raise BadInput(f"no scitune search among the experiments matching {' '.join(patterns)}")
    if any(r.from_trials for r in rows):
        notes.append("* interrupted, running or failed search: figures computed from its trial "
                     "runs so far (continue it with launch.py --resume --experiment NAME)")
    return rows, notes


# -- output ------------------------------------------------------------------------------------

def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def table(rows: list[Row]) -> str:
    """The terminal table: one line per search."""
    header = ("experiment", "space", "searcher", "scheduler", "trials", "failed", "metric", "best",
              "seed", "best-seed", "trial-epochs", "compute", "wall", "status", "started",
              "best run")
    lines = [header]
    for r in rows:
        done = "-" if r.trials is None else str(r.trials)
        lines.append((
            r.experiment, r.space or "-", r.searcher or "-", r.scheduler or "-",
            f"{done}/{r.trials_requested if r.trials_requested is not None else '?'}",
            "-" if r.failed is None else str(r.failed),
            f"{r.metric} ({r.mode})" if r.metric else "-",
            _num(r.best), _num(r.seed), _num(r.best_minus_seed, signed=True),
            "-" if r.trial_epochs is None else str(r.trial_epochs),
            _duration(r.compute_seconds), _duration(r.wall_seconds),
            r.status + ("*" if r.from_trials else ""),
            r.start.strftime("%Y-%m-%d %H:%M") if r.start else "-",
            r.best_run_id or "-",
        ))
    numeric = {4, 5, 7, 8, 9, 10, 11, 12}
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
                     for line in lines)


def to_csv(rows: list[Row]) -> str:
    """The rows as CSV text (full precision, ISO start time, empty cells for missing values)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.record() for r in rows)
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    """The ``compare`` sub-command. (flags parsed by :mod:`cli.compare`)."""
    csv_path = None
    if args.csv not in (None, "-"):
        csv_path = Path(args.csv).absolute()
        if not csv_path.parent.is_dir():
            raise BadInput(f"--csv {args.csv}: folder {csv_path.parent} does not exist; create it")
        if csv_path.is_dir():
            raise BadInput(f"--csv {args.csv}: is a folder; name a file")
    patterns = list(args.names) + list(args.experiment)
    if not patterns:
        raise BadInput("name the searches to compare: launch.py compare NAME [NAME ...] "
                       "(or --experiment NAME)")
    storage = None
    uri = args.mlflow_uri
    if args.storage is not None:
        from common.paths import is_uri
        from tracking.record import recorded_store_uri

        storage = args.storage if is_uri(args.storage) else str(Path(args.storage).resolve())
        uri = uri or recorded_store_uri(storage, patterns)
    client = open_client(uri)
    rows, notes = collect(client, patterns, storage)
    text = to_csv(rows)
    if args.csv == "-":
        sys.stdout.write(text)
        return 0
    print(table(rows))
    for note in notes:
        print(note)
    if csv_path is not None:
        try:
            csv_path.write_text(text)
        except OSError as exc:
            raise BadInput(f"--csv {args.csv}: cannot write ({exc.strerror}); choose another "
                           "file") from None
        print(f"CSV: {csv_path}")
    return 0
