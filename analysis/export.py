"""``--export-best FILE.yaml``: the best configuration of a finished search, ready for
``launch.py train --config FILE.yaml``.

The file holds the space, the flat configuration, where it came from (experiment, trial,
objective value) and the data it was searched on, so a retrain needs nothing else.
"""

from __future__ import annotations

from pathlib import Path

from common.errors import BadInput
from common.paths import check_writable_dir, temp_file_beside
from tracking.record import SearchRecord
from tracking.state import state_path

HEADER = ("# Best configuration of a scitune search. Retrain it alone with:\n"
          "#   python launch.py train --config {file} --max-epochs N\n")


def check_target(path: str | Path) -> Path:
    """Refuse (before any work) a target whose folder is missing or that is not YAML."""
    path = Path(path).absolute()
    if path.suffix not in (".yaml", ".yml"):
        raise BadInput(f"--export-best {path}: name a .yaml file")
    check_writable_dir(path.parent, "--export-best")  # before a search that ends writing it
    if not path.parent.is_dir():
        raise BadInput(f"--export-best {path}: folder {path.parent} does not exist; create it")
    if path.is_dir():
        raise BadInput(f"--export-best {path} is a folder; name a file")
    return path


def export_finished(storage: str, experiment: str, path: str | Path,
                    tracking_uri: str | None = None) -> Path | None:
    """Write the best configuration of an existing search to ``path``; None when there is
    no such search in ``storage`` (the caller then runs it). ``tracking_uri`` (``--mlflow-uri``)
    names the search's MLflow store where it is no longer where the search recorded it."""
    if not state_path(storage, experiment).exists():
        return None
    if tracking_uri is not None:
        from tracking.record import existing_store_uri

        tracking_uri = existing_store_uri(tracking_uri)
    return write_best(storage, experiment, path, tracking_uri)


def write_best(storage: str, experiment: str, path: str | Path,
               tracking_uri: str | None = None) -> Path:
    """Write the best configuration of ``experiment`` to ``path`` (atomically)."""
    import os

    import yaml

    path = check_target(path)
    search = SearchRecord.load(storage, experiment, tracking_uri)
    record = search.best_record()
    settings = search.settings
    metric = next((k for k in record if k not in ("space", "trial", "config")), None)
    doc = {
        "space": record["space"],
        "source": {"experiment": experiment, "trial": record.get("trial"),
                   "tracking_uri": search.tracking_uri,
                   "parent_run_id": search.parent_run_id},
        "objective": {"metric": metric, "value": record.get(metric)},
        # a user's file by its absolute path (the search may have named it relative to its cwd)
        "data": {"path": settings.get("data") if settings.get("data") in (None, "digits")
                 else settings.get("data_path"),
                 "options": settings.get("data_option") or {},
                 "samples": settings.get("samples"), "seed": settings.get("seed", 0)},
        "config": record["config"],
    }
    try:
        fd, tmp = temp_file_beside(path, ".tmp")
    except OSError as exc:
        raise BadInput(f"--export-best {path}: cannot write ({exc.strerror}); choose another "
                       "file") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(HEADER.format(file=path.name))
            yaml.safe_dump(doc, f, sort_keys=False)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise BadInput(f"--export-best {path}: cannot write ({exc.strerror}); choose another "
                       "file") from None
    return path
