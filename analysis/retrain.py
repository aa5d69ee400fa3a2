"""``python launch.py train --config FILE.yaml --max-epochs N``: retrain one configuration.

The configuration (written by ``--export-best``, or by hand: ``space:`` and ``config:``) is
trained alone in this process with the same loop every trial uses, logged as one MLflow run
(tag ``scitune.run=train``: per-epoch metrics, the kind's figures, the model in
``mlflow.pytorch`` format), and evaluated once on the held-out test split, which no search
ever looks at.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import BadInput
from common.signals import sigterm_as_interrupt


def read_config(path: str | Path) -> dict[str, Any]:
    """Parse a configuration file; raises :class:`BadInput` naming the problem."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BadInput(f"--config {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise BadInput(f"--config {path}: not a text (UTF-8) file; give a file written by "
                       "--export-best") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise BadInput(f"--config {path}: not valid YAML{at}; fix the syntax") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("space"), str) \
            or not isinstance(doc.get("config"), Mapping) or not doc["config"]:
        raise BadInput(f"--config {path}: expected 'space: NAME' and a non-empty 'config:' "
                       "mapping (write one with --export-best)")
    for section in ("data", "source", "objective"):
        if doc.get(section) is not None and not isinstance(doc[section], Mapping):
            raise BadInput(f"--config {path}: '{section}:' must be a mapping")
    return dict(doc)


def check_config(space: Any, config: Mapping[str, Any], info: Any, where: str) -> None:
    """Every name must be one the space suggests, with a value of the right type."""
    from search.space_file import catalog, normalise

    known = catalog(space, info)
    nested = [k for k, v in config.items() if isinstance(v, Mapping | list)]
    if nested:
        raise BadInput(f"{where}: {nested[0]}: expected a single value")
    normalise(config, known, where)


def resolve_data(doc: Mapping[str, Any], args: argparse.Namespace, spec: Any, space: Any,
                 tracking_uri: str) -> tuple[str, int, dict, int]:
    """(prepared data path, seed, options, samples) from flags over the file's ``data:``."""
    from common.seeds import check_seed

    data = doc.get("data") or {}
    where = f"--config {Path(args.config).name}: data:"  # each entry checked where it is used
    seed = args.seed if args.seed is not None else check_seed(data.get("seed") or 0,
                                                              f"{where} seed:")
    if args.data_option is not None:
        options = dict(args.data_option)
    else:
        file_options = data.get("options") or {}
        if not isinstance(file_options, Mapping):
            raise BadInput(f"{where} options: must be a mapping of NAME: VALUE")
        options = {str(k): str(v) for k, v in file_options.items()}
    samples = next(v for v in (args.samples, data.get("samples"), spec.default_samples)
                   if v is not None)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples <= 0:
        raise BadInput(f"{where} samples: {samples!r}: give a whole number > 0")
    path = args.data if args.data is not None else data.get("path")
    if path is not None and not isinstance(path, str):
        raise BadInput(f"{where} path: {path!r}: give the data file's path, or null for "
                       "synthetic data")
    if path is not None and args.data is None and "://" not in str(path) \
            and not Path(str(path)).exists() and str(path) != "digits":
        raise BadInput(f"the data file {path} of --config is missing here; pass --data PATH")
    from search.stages import prepare_data

    prepared = prepare_data(space, path, int(samples), seed, options, tracking_uri)
    return prepared, seed, options, int(samples)


def run(args: argparse.Namespace) -> int:
    """The ``train`` sub-command; returns the exit code. (flags parsed by :mod:`cli.train`)."""

    from common.paths import check_writable_dir
    from datasets import get_dataset
    from search_spaces import get_space
    from tracking.store import resolve_mlflow_uri

    doc = read_config(args.config)
    space = get_space(doc["space"])
    config = {str(k): v for k, v in doc["config"].items()}
    uri = resolve_mlflow_uri(args.mlflow_uri)
    if uri.startswith("sqlite:///"):
        check_writable_dir(Path(uri[len("sqlite:///"):]).parent, "--mlflow-uri")
    spec = get_dataset(space.dataset)
    data_path, seed, options, samples = resolve_data(doc, args, spec, space, uri)
    data = spec.load(data_path, seed, options)
    where = f"--config {Path(args.config).name}"
    check_config(space, config, data.info, where)
    try:
        space.build(dict(config), data.info)
    except Exception as exc:  # noqa: BLE001 - a hand-edited configuration that cannot build
        raise BadInput(f"{where}: the model does not build ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); fix the config"
                       ) from None
    try:
        return _train(args, doc, space, config, data, data_path, seed, options, samples, uri)
    except Exception as exc:
        from common.errors import SearchStopped, transport_failure
        from tracking.store import shown_uri

        reason = transport_failure(exc)
        if reason is None:
            raise
        raise SearchStopped(f"the MLflow store {shown_uri(uri)} stopped answering during "
                            f"training ({reason}); start it again (or give another "
                            "--mlflow-uri) and run the command again") from exc


def _train(args: argparse.Namespace, doc: Mapping[str, Any], space: Any, config: dict[str, Any],
           data: Any, data_path: str, seed: int, options: dict, samples: int, uri: str) -> int:
    import torch
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from tracking.model_export import log_model
    from tracking.store import RUN_KIND_TAG, git_commit, open_mlflow_experiment
    from trainables.figures import as_png
    from trainables.loop import FIGURES_KEY, FitSettings, StepContext, TrialDiverged, fit, get_kind

    source = doc.get("source") or {}
    name = args.experiment or f"{source.get('experiment') or space.name}-retrain"
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device here; use --device cpu")
    experiment_id = open_mlflow_experiment(uri, name)
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, tags={
        RUN_KIND_TAG: "train", "space": space.name, "metric": space.metric, "mode": space.mode,
        "git_commit": git_commit(), "mlflow.runName": f"{space.name} retrain, {args.max_epochs} epochs",
        "source_experiment": str(source.get("experiment", "")),
        "source_trial": str(source.get("trial", ""))})
    run_id = run.info.run_id
    params = {**{k: str(v)[:6000] for k, v in config.items()}, "max_epochs": args.max_epochs,
              "seed": seed, "data_path": data_path, "samples": samples,
              "data_option": str(options), "precision": args.precision}
    items = [Param(k, str(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start:start + 100])
    client.log_artifact(run_id, str(Path(args.config).absolute()))
    print(f"train {space.name} for {args.max_epochs} epochs on {device}: data {data_path}; "
          f"MLflow {uri} (experiment {name!r}, run {run_id})")
    sys.stdout.flush()

    figures: dict[str, Any] = {}  # name → PNG bytes or a deferred Picture
    started = time.perf_counter()

    def report(metrics: dict[str, float], state: dict[str, Any]) -> None:
        epoch = int(metrics["epoch"])
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, epoch)
                                          for k, v in metrics.items() if math.isfinite(v)])
        if state.get(FIGURES_KEY):
            figures.update(state[FIGURES_KEY])  # drawn when logged (deferred ones too)
        print(f"epoch {epoch}/{args.max_epochs}  {space.metric} {metrics[space.metric]:.4f}  "
              f"({metrics['epoch_seconds']:.1f} s, {time.perf_counter() - started:.0f} s total)")
        sys.stdout.flush()

    settings = FitSettings(max_epochs=args.max_epochs, seed=seed, device=device,
                           precision=args.precision, figure_every=args.max_epochs)
    try:
        with sigterm_as_interrupt("training"):
            model = fit(space, config, data, settings, report=report).model
    except KeyboardInterrupt:
        client.set_terminated(run_id, status="KILLED")
        print("interrupted: the run is marked KILLED", file=sys.stderr)
        return 130
    except TrialDiverged as exc:
        client.set_terminated(run_id, status="FAILED")
        print(f"training diverged ({exc}); the run is marked FAILED", file=sys.stderr)
        return 1
    model.eval()
    ctx = StepContext.create(device, args.precision)
    test = get_kind(space.kind).evaluate(model, data, "test", dict(config), ctx)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, args.max_epochs)
                                      for k, v in test.items() if math.isfinite(v)])
    if figures:
        with tempfile.TemporaryDirectory() as tmp:
            for fig_name, picture in figures.items():
                Path(tmp, f"{fig_name}.png").write_bytes(as_png(picture))
            client.log_artifacts(run_id, tmp, artifact_path="figures")
    model_uri = log_model(uri, run_id, model, data, config)
    client.set_terminated(run_id, status="FINISHED")
    print(f"test set ({len(data.test)} samples):")
    for key, value in sorted(test.items()):
        print(f"  {key:<24} {value:.4f}")
    if isinstance((doc.get("objective") or {}).get("value"), int | float):
        print(f"search's validation {space.metric}: {doc['objective']['value']:.4f}")
    print(f"model: mlflow.pytorch.load_model('{model_uri}')")
    return 0
