"""MLflow bookkeeping from the driver only: one parent run per experiment, one child per trial.

Ray's own ``MLflowLoggerCallback`` keeps no durable state, so a restored experiment opens a
second run for every resumed trial. Here the parent run id and a ``trial_id → run_id`` map
(with the last epoch logged per trial) live in ``<storage>/.scitune/<experiment>/state.json``,
written atomically (outside Ray's experiment folder, which Ray re-syncs from its own staging
copy and would roll back), and every child run carries a ``trial_id`` tag. A resumed driver reuses
runs and skips epochs it already logged, so each trial has exactly one run and each epoch one
metric point.
"""

from __future__ import annotations

import math
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from common.errors import TrackingFailed
from tracking.record import SEED_TAG, same_config
from tracking.state import ExperimentState
from tracking.store import RUN_KIND_TAG
from trainables.checkpoint import FAILURE_KEY

#: the result key under which Ray Tune's ``TuneReportCallback`` passes a multi-worker
#: trial's checkpoint (rank 0's, in the trial's Ray Train run; ray.tune.integration.ray_train)
TRAIN_CHECKPOINT_KEY = "checkpoint_path"
SKIP_KEYS = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint",
                                     "node_id", TRAIN_CHECKPOINT_KEY, FAILURE_KEY}


#: seconds one MLflow write may wait before the search says the store is not answering
STALL_WARNING_S = 30.0


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The metrics a trial reported (Ray's bookkeeping keys and non-numbers dropped)."""
    out = {}
    for key, value in result.items():
        if key in SKIP_KEYS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[key] = float(value)
    return out


class MlflowTracker(Callback):
    """Tune callback that mirrors trials into MLflow child runs of one parent run.

    MLflow writes (milliseconds each on SQLite, more to a server) run on one writer thread in
    the order Tune delivered the events, so Tune's event loop, and with it every trial
    waiting for its next ``report`` to be taken, never waits on MLflow. Before Tune saves
    its experiment state (``get_state``), the queue is drained: anything Ray's saved state
    counts as done is already in MLflow, so a resumed search neither loses nor repeats an
    epoch.
    """

    def __init__(self, tracking_uri: str, state_path: str, max_epochs: int,
                 run_tags: dict[str, str], metric: str, seed_config: dict[str, Any] | None = None):
        self.metric = metric
        #: the trial with exactly this configuration gets the tag ``scitune.seed=true``
        self.seed_config = {k: str(v) for k, v in (seed_config or {}).items()}
        self.tracking_uri = tracking_uri
        self.state_path = str(state_path)
        self.max_epochs = max_epochs
        self.run_tags = dict(run_tags)
        self._client = None
        self._state: ExperimentState | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._busy_since: float | None = None  # when the write in progress started
        self._stall_warned = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client=None, _state=None, _queue=None, _thread=None, _error=None,
                     _busy_since=None, _stall_warned=False)
        return state

    # -- the writer thread --------------------------------------------------------------
    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise TrackingFailed(self.tracking_uri, self._error) from self._error

    def _submit(self, fn: Any, *args: Any) -> None:
        self._raise_if_failed()
        if self._thread is None or not self._thread.is_alive():
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._drain, name="mlflow-writer",
                                            daemon=True)
            self._thread.start()
        self._queue.put((fn, args))

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            fn, args = self._queue.get()
            try:
                if fn is None:
                    return
                if self._error is None:
                    self._busy_since = time.monotonic()
                    fn(*args)
            except BaseException as exc:  # noqa: BLE001 - reported on the next event/flush
                self._error = exc
            finally:
                self._busy_since = None
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued MLflow write is done; raise :class:`TrackingFailed` if one
        failed. A write that waits long on its store is said while it waits."""
        pending = self._queue
        if pending is not None:
            with pending.all_tasks_done:
                while pending.unfinished_tasks:
                    pending.all_tasks_done.wait(timeout=5.0)
                    self._say_if_stalled()
        self._say_if_stalled()
        self._raise_if_failed()

    def _say_if_stalled(self) -> None:
        """One line when an MLflow write has waited :data:`STALL_WARNING_S` on its store
        (MLflow retries for minutes, during which the search would seem to hang), and one
        when writes go through again."""
        since = getattr(self, "_busy_since", None)  # absent in trackers pickled before it
        warned = getattr(self, "_stall_warned", False)
        if since is not None and not warned and time.monotonic() - since >= STALL_WARNING_S:
            from tracking.store import shown_uri

            self._stall_warned = True
            print(f"warning: the MLflow store {shown_uri(self.tracking_uri)} has not answered "
                  f"for {time.monotonic() - since:.0f} s; MLflow retries for a few minutes "
                  "(MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT) before the "
                  "search stops, to be resumed", file=sys.stderr, flush=True)
        elif since is None and warned and self._error is None:
            self._stall_warned = False
            print("the MLflow store answers again; the search goes on", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        """Flush and stop the writer thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put((None, ()))
            self._thread.join()
        self._thread = None
        self.flush()

    # -- helpers (writer thread) --------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def state(self) -> ExperimentState:
        if self._state is None:
            self._state = ExperimentState.load(self.state_path)
        return self._state

    def _run_for(self, trial_id: str, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """The child-run record of a trial, creating the MLflow run on first sight."""
        record = self.state.trials.get(trial_id)
        if record is not None:
            return record
        from mlflow.entities import Param

        from trainables.checkpoint import flatten

        tags = dict(self.run_tags)
        tags.update({
            "mlflow.parentRunId": self.state.data["parent_run_id"],
            "mlflow.runName": name,
            "trial_id": trial_id,
            RUN_KIND_TAG: "trial",
        })
        seed = getattr(self, "seed_config", None)  # absent in states pickled before it existed
        is_seed = bool(seed) and same_config(flatten(config), seed)
        if is_seed:
            tags[SEED_TAG] = "true"
        run = self.client.create_run(self.state.data["mlflow_experiment_id"], tags=tags)
        params = [Param(k, str(v)[:6000]) for k, v in sorted(flatten(config).items())]
        for start in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[start : start + 100])
        record = {"run_id": run.info.run_id, "last_step": 0, "status": "RUNNING",
                  "config": flatten(config), "seed": is_seed}
        self.state.trials[trial_id] = record
        self.state.save()
        return record

    def _started(self, key: tuple) -> None:
        record = self._run_for(*key)
        if record["status"] != "RUNNING":
            self.client.update_run(record["run_id"], status="RUNNING")
            record["status"] = "RUNNING"
            self.state.save()

    def _result(self, key: tuple, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        record = self._run_for(*key)
        if FAILURE_KEY in result:
            record[FAILURE_KEY] = str(result[FAILURE_KEY])
            self.state.save()
            return
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if step <= record["last_step"]:
            return  # replayed after a resume: already logged
        now = int(time.time() * 1000)
        values = numeric_metrics(result)
        metrics = [Metric(k, v if math.isfinite(v) else float("nan"), now, step)
                   for k, v in values.items()]
        self.client.log_batch(record["run_id"], metrics=metrics)
        record["last_step"] = step
        record["last_metrics"] = values
        self.state.save()

    def _completed(self, key: tuple) -> None:
        record = self._run_for(*key)
        if record.get(FAILURE_KEY):
            self._end(key, "FAILED", {FAILURE_KEY: record[FAILURE_KEY]})
            return
        stopped_early = record["last_step"] < self.max_epochs
        self._end(key, "FINISHED", {"stopped_early": str(stopped_early).lower()})

    def _end(self, key: tuple, status: str, tags: dict[str, str]) -> None:
        record = self._run_for(*key)
        for name, value in tags.items():
            self.client.set_tag(record["run_id"], name, value)
        self.client.set_terminated(record["run_id"], status=status)
        record["status"] = status
        record.update(tags)
        self.state.save()

    @staticmethod
    def _key(trial: Any) -> tuple[str, str, dict[str, Any]]:
        return trial.trial_id, str(trial), dict(trial.config)

    # -- Tune callback hooks (Tune's event loop: enqueue only) --------------------------
    def setup(self, **info: Any) -> None:
        """Re-read the state (the truth after a driver restart) and reconcile it with MLflow.

        A driver killed after logging an epoch but before saving the state would otherwise
        log that epoch twice: the last logged step of each open run is read back."""
        self._state = None
        changed = False
        for record in self.state.trials.values():
            if record.get("status") not in ("RUNNING", "KILLED"):
                continue
            history = self.client.get_metric_history(record["run_id"], self.metric)
            logged = max((m.step for m in history), default=0)
            if logged > record["last_step"]:
                record["last_step"] = logged
                changed = True
        if changed:
            self.state.save()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._say_if_stalled()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(self._started, self._key(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self._submit(self._result, self._key(trial), dict(result))
        train_checkpoint = result.get(TRAIN_CHECKPOINT_KEY)
        if isinstance(train_checkpoint, str) and train_checkpoint:
            # A multi-worker trial reports no Tune checkpoint: rank 0 wrote it (pictures
            # included) into the trial's Ray Train run, whose path comes with the result; that
            # run lies on the search's storage, so the trial's file system reads it (a path
            # on cloud storage carries no scheme).
            from ray.train import Checkpoint

            filesystem = getattr(getattr(trial, "storage", None), "storage_filesystem", None)
            try:
                checkpoint = Checkpoint(train_checkpoint, filesystem=filesystem)
            except Exception as exc:  # noqa: BLE001 - never fail a search over a picture
                print(f"warning: pictures of {trial} not read from {train_checkpoint}: {exc}",
                      file=sys.stderr)
                return
            self._log_checkpoint_figures(trial, checkpoint, int(result.get("epoch", 0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(self._completed, self._key(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(self._end, self._key(trial), "FAILED", {FAILURE_KEY: failure_reason(trial)})

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        """Figures a trial wrote beside its checkpoint become artifacts of its MLflow run,
        under ``figures/epoch_NNN/`` (read now: Tune may delete old checkpoints later)."""
        self._log_checkpoint_figures(trial, checkpoint,
                                     int((trial.last_result or {}).get("epoch", 0)))

    def _log_checkpoint_figures(self, trial: Any, checkpoint: Any, step: int) -> None:
        pictures = read_figures(checkpoint)
        if pictures:
            self._submit(self._log_figures, self._key(trial), step, pictures)

    def _log_figures(self, key: tuple, step: int, pictures: dict[str, Any]) -> None:
        from trainables.figures import as_png

        record = self._run_for(*key)
        with tempfile.TemporaryDirectory() as tmp:
            for name, picture in pictures.items():
                try:  # a deferred picture is drawn here, off the trial's training loop
                    png = as_png(picture)
                except Exception as exc:  # noqa: BLE001 - never fail a search over a picture
                    print(f"warning: picture {name} of epoch {step} not drawn: {exc}",
                          file=sys.stderr)
                    continue
                Path(tmp, name).write_bytes(png)
            self.client.log_artifacts(record["run_id"], tmp, artifact_path=f"figures/epoch_{step:03d}")

    def get_state(self) -> None:
        """Called as Tune saves its experiment state: drain the queue first (see class doc)."""
        self.flush()
        return None

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()


def read_figures(checkpoint: Any) -> dict[str, Any]:
    """``figures/*.png`` of a Tune checkpoint (local folder or cloud storage) as PNG bytes, and
    its deferred pictures (``*.picture.npz``) as :class:`trainables.figures.Picture`, keyed
    ``<name>.png``: read now, drawn later (:func:`trainables.figures.as_png`)."""
    from pyarrow import fs as pafs

    from trainables.checkpoint import FIGURES_DIR
    from trainables.figures import PICTURE_SUFFIX, decode_picture

    try:
        filesystem, folder = checkpoint.filesystem, f"{checkpoint.path}/{FIGURES_DIR}"
        infos = filesystem.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        out = {}
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            if info.path.endswith(".png"):
                with filesystem.open_input_stream(info.path) as stream:
                    out[info.base_name] = stream.read()
            elif info.path.endswith(PICTURE_SUFFIX):
                with filesystem.open_input_stream(info.path) as stream:
                    blob = stream.read()
                try:
                    out[info.base_name[: -len(PICTURE_SUFFIX)] + ".png"] = decode_picture(blob)
                except Exception as exc:  # noqa: BLE001 - a damaged file (a truncated zip,
                    # bad JSON, an object array): skip it, never fail a trial over a picture
                    print(f"warning: {info.path}: not a picture ({exc})", file=sys.stderr)
        return out
    except Exception:  # noqa: BLE001 - pictures are a convenience: never fail a search over one
        return {}


def failure_reason(trial: Any) -> str:
    """The last line of a failed trial's error (the exception type and message)."""
    try:
        text = trial.get_error() or ""
    except Exception:  # noqa: BLE001 - a missing error file must not break bookkeeping
        text = ""
    if not text:  # Ray writes the error beside the trial first and copies it to storage later
        try:
            with open(trial.error_file) as stream:
                text = stream.read()
        except Exception:  # noqa: BLE001 - no local copy either
            text = ""
    lines = [line.strip() for line in str(text).splitlines()
             if line.strip() and not line.startswith("Failure #")]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line or "Diverged" in line:
            return line[:500]
    return (lines[-1] if lines else "unknown error")[:500]
