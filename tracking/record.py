"""What a finished search left in MLflow, read back: its best configuration and checkpoint
(``best_config.json`` and ``best_checkpoint.pt`` on its parent run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.errors import DataError


def best_of_search(experiment: str, space: str, option: str, tracking_uri: str | None = None
                   ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(config, model state, parent run id) of the best trial of a finished search of
    ``space`` in MLflow experiment ``experiment`` (the tracking store of this search), for
    searches that build on an earlier one (``--data-option {option}=NAME``); raises
    :class:`DataError` naming the fix."""
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or mlflow.get_tracking_uri()
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise DataError(f"--data-option {option}={experiment}: no such MLflow "
                        f"experiment in {uri}; run a '{space}' search first or drop the option")
    parents = [r for r in client.search_runs([found.experiment_id], max_results=1000)
               if "mlflow.parentRunId" not in r.data.tags]
    finished = [r for r in parents if r.info.status == "FINISHED"]
    if not finished:
        raise DataError(f"--data-option {option}={experiment}: the experiment has no "
                        "finished search; let it finish (or --resume it) first")
    parent = max(finished, key=lambda r: r.info.end_time or 0)
    if parent.data.tags.get("space") != space:
        raise DataError(f"--data-option {option}={experiment}: it searched space "
                        f"{parent.data.tags.get('space')!r}, not '{space}'")
    local = Path(client.download_artifacts(parent.info.run_id, "best_config.json"))
    config = json.loads(local.read_text())["config"]
    checkpoint = client.download_artifacts(parent.info.run_id, "best_checkpoint.pt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    return config, state, parent.info.run_id
