"""MLflow runs, a per-epoch metrics callback and model logging; no-ops when mlflow is off."""

import contextlib
import io
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig, OmegaConf

from src.config import config_hash
from src.runtime import (
    UserError,
    describe,
    first_line,
    quiet_library,
    run_status,
    sigterm_interrupts,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
# The per-epoch metrics are logged asynchronously. Without a buffering time MLflow's logging thread
# blocks in a 1 s queue.get, and end_run waits for it (benchmarks/log_model.py measures it). With
# it, the thread waits on the stop event instead, so end_run returns at once; metrics are then
# written in one batch per second. A value in the environment wins.
ASYNC_BUFFERING_ENV = "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"
# MLflow's "Downloading artifacts" bars (model logging and registration download what they just
# wrote) are off unless the environment turns them on: a console line per point is enough.
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# The experiment tag MLflow 3's UI reads to open an experiment in its model-training view
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# a store in use by another process, or a row another worker inserted a moment before (the
# MLflow server checks, then inserts: the loser's insert fails; again, it finds the row)
CONTENDED = ("database is locked", "duplicate key value violates unique constraint",
             "UNIQUE constraint failed")  # fmt: skip


def retry_contended(fn: Callable[..., T], *args: Any, tries: int = 8, **kwargs: Any) -> T:
    """Call fn, retrying with backoff while the store is contended (CONTENDED): a shared SQLite
    store is locked, or workers logging at the same moment raced to insert the same row (an
    experiment's tag, a dataset)."""
    for attempt in range(tries):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not any(c in str(e) for c in CONTENDED) or attempt == tries - 1:
                raise
            log.warning("MLflow store contended (%s), retrying (%d/%d)",
                        first_line(e)[:80], attempt + 1, tries)  # fmt: skip
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def tracking_uri(configured: str) -> str:
    """MLFLOW_TRACKING_URI in the environment wins over the configured store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured


def no_telemetry() -> None:
    """Turn MLflow's usage telemetry off unless the environment turns it on. Its first record
    starts a thread that, when it cannot reach MLflow's servers (an offline cluster node),
    removes a variable from os.environ while other threads read it: at 32 workers, a log-batch
    request of one in 200 trials failed with KeyError '_MLFLOW_TELEMETRY_SESSION_ID'."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with contextlib.suppress(ImportError):  # an MLflow without telemetry
        from mlflow.telemetry.client import set_telemetry_client

        set_telemetry_client()  # none when disabled: no records, no such thread


def setup(cfg: DictConfig) -> str:
    """Point MLflow at the store and create the experiment if needed; return the store URI."""
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    os.environ.setdefault(ASYNC_BUFFERING_ENV, "1")
    os.environ.setdefault(PROGRESS_BAR_ENV, "false")
    no_telemetry()
    quiet_library("mlflow", logging.WARNING)  # its INFO lines: only with hydra.verbose=mlflow
    mlflow.set_tracking_uri(uri)
    try:
        experiment = retry_contended(mlflow.set_experiment, cfg.mlflow.experiment_name)
        if EXPERIMENT_KIND[0] not in experiment.tags:  # else MLflow 3's UI may guess GenAI
            retry_contended(mlflow.set_experiment_tag, *EXPERIMENT_KIND)
    except Exception as e:
        raise UserError(f"mlflow.tracking_uri={uri!r} cannot be used ({first_line(e)})") from None
    return uri


@contextmanager
def start_run(
    cfg: DictConfig,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun | None]:
    """Start an MLflow run with params, tags and the resolved config.

    The run ends FAILED with the error as a tag when the block raises, KILLED on Ctrl-C.
    """
    if not cfg.mlflow.enabled:
        yield None
        return
    uri = setup(cfg)
    all_tags = {"pipeline_id": config_hash(cfg), **(tags or {})}
    if commit := git_commit():
        all_tags["mlflow.source.git.commit"] = commit
    active = retry_contended(
        mlflow.start_run, run_name=run_name, tags=all_tags, parent_run_id=parent_run_id
    )
    with active as run:
        mlflow.log_params(params)
        mlflow.log_dict(OmegaConf.to_container(cfg, resolve=True), "config.yaml")
        log.info("MLflow run %s (%s) in %s", run.info.run_id, run_name, uri)
        try:
            with sigterm_interrupts():
                yield run
        except BaseException as e:
            mlflow.set_tag("error", describe(e))
            mlflow.end_run(run_status(e))
            raise


class MetricsCallback(keras.callbacks.Callback):
    """Log every epoch's metrics (loss, val_loss, ...) to the active MLflow run, with a prefix."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {f"{self.prefix}{k}": float(v) for k, v in (logs or {}).items()}
        mlflow.log_metrics(metrics, step=epoch, synchronous=False)


def callbacks(prefix: str) -> list[keras.callbacks.Callback]:
    return [MetricsCallback(prefix)] if mlflow.active_run() else []


def active_run_id() -> str | None:
    run = mlflow.active_run()
    return run.info.run_id if run else None


def set_tags(tags: dict[str, str]) -> None:
    if mlflow.active_run():
        mlflow.set_tags(tags)


def log_metrics(metrics: dict[str, float]) -> None:
    if mlflow.active_run():
        mlflow.log_metrics(metrics)


def log_artifact(path: str | os.PathLike, artifact_path: str | None = None) -> None:
    if mlflow.active_run():
        mlflow.log_artifact(str(path), artifact_path)


def log_dataset(x: np.ndarray, y: np.ndarray, name: str, digest: str, source: str) -> None:
    """The prepared training split as the run's input: the Dataset column of the MLflow UI."""
    if mlflow.active_run():
        with warnings.catch_warnings():  # a local path matches two equal source types
            warnings.filterwarnings("ignore", message="The specified dataset source can be")
            dataset = mlflow.data.from_numpy(x, source=source, targets=y, name=name,
                                             digest=digest)  # fmt: skip
        retry_contended(mlflow.log_input, dataset, context="training")  # two runs, one dataset


def log_dict(values: dict, artifact_file: str) -> None:
    if mlflow.active_run():
        mlflow.log_dict(values, artifact_file)


def finished_child(parent_run_id: str, point_key: str) -> str | None:
    """The id of a FINISHED child run of `parent_run_id` tagged with `point_key`, if any."""
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' AND "
        f"tags.point_key = '{point_key}' AND attributes.status = 'FINISHED'",
        output_format="list",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def load_dict(run_id: str, artifact_file: str) -> dict:
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_file}")


def pip_requirements() -> list[str]:
    """What a logged model needs besides MLflow, pinned to the versions here."""
    import tensorflow as tf

    return [
        f"tensorflow=={tf.__version__}",
        f"keras=={keras.__version__}",
        f"numpy=={np.__version__}",
    ]


def log_model(
    model: keras.Model, name: str, x_example: np.ndarray, metadata: dict | None = None
) -> None:
    """Log a Keras model with a signature, an input example and explicit pip requirements."""
    if not mlflow.active_run():
        return
    from mlflow.models import infer_signature

    x_example = x_example[:5]
    # A direct call, not predict(): predict traces a new predict function for each model only to
    # get 5 outputs (benchmarks/log_model.py measures the cost).
    y_example = keras.ops.convert_to_numpy(model(x_example, training=False))
    signature = infer_signature(x_example, y_example)
    with contextlib.redirect_stdout(io.StringIO()):  # MLflow's check of the example calls
        mlflow.tensorflow.log_model(  # Keras' predict, which prints a progress bar
            model,
            name=name,
            signature=signature,
            input_example=x_example,
            metadata=metadata,
            pip_requirements=pip_requirements(),
        )
