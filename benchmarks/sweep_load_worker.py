"""One worker of benchmarks/sweep_load.py: `python -m src.train <arguments>` with the real
sweeper, callback, study and tracking, but each trial's training replaced by a test double (a
known objective, a random short duration, the real per-epoch reports to the pruner, one child
run with its metrics and result.json, and a tiny "classifier" model when it may be the
champion). Not a mode of the project: this script is its only user.

Usage: python benchmarks/sweep_load_worker.py hydra/sweeper=optuna ... -m
SWEEP_LOAD_STATS=<file> collects one JSON line per trial and one at the end.
"""

import functools
import json
import math
import os
import random
import resource
import sys
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EPOCHS = 5  # per-epoch reports to the trial, as the classifier's KerasPruningCallback makes
SECONDS = float(os.environ.get("SWEEP_LOAD_TRIAL_SECONDS", "0.2"))  # mean trial duration
DATA_HASH = "0" * 32
spent = Counter()  # this trial's seconds: fake training, study database, tracking server


def without_tensorflow() -> None:
    """An empty keras module and no TensorFlow: nothing here trains (TensorFlow would cost each
    worker 0.8 GB and 8 s); the pruning callback needs keras.callbacks.Callback only."""
    from src import runtime

    keras = types.ModuleType("keras")
    keras.callbacks = types.ModuleType("keras.callbacks")
    keras.callbacks.Callback = type("Callback", (), {})
    keras.Model = type("Model", (), {})
    sys.modules.update({"keras": keras, "keras.callbacks": keras.callbacks})
    runtime.quiet_tensorflow = lambda: None  # it imports TensorFlow


def objective(bottleneck: int, dropout: float) -> float:
    """The known validation accuracy of a point: best at bottleneck 16, dropout 0.2."""
    return 0.95 - 0.02 * (math.log2(bottleneck) - 4) ** 2 - 0.5 * (dropout - 0.2) ** 2


def epochs(value: float, seconds: float, callbacks: list) -> None:
    """Sleep `seconds` over EPOCHS epochs, reporting a curve rising to `value` after each."""
    for epoch in range(EPOCHS):
        time.sleep(seconds / EPOCHS)
        spent["objective"] += seconds / EPOCHS
        logs = {"val_accuracy": value * (1 - 0.5 ** (epoch + 2))}
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)


def constant_model() -> Any:
    """The cheapest registrable classifier: a pyfunc that predicts class 0."""
    from mlflow.pyfunc import PythonModel

    class Constant(PythonModel):
        def predict(self, context, model_input, params=None):  # no hints: MLflow checks them
            return [0] * len(model_input)

    return Constant()


def may_be_champion(ctx: Any, value: float) -> bool:
    """Whether no trial told so far beats `value`: only those log a model (the best always
    does), so that the champion is registered as for real at a fraction of the cost."""
    from src.sweeps.optuna_study import told_results

    told = told_results(ctx.storage, ctx.study)
    return all(r.get("val_accuracy", 0.0) <= value for r in told)


def train_point(cfg: Any, out: Path, run_name: str, ctx: Any = None) -> dict[str, Any]:
    """src.train.train_point's bookkeeping around a fake training of known result."""
    import mlflow
    import numpy as np

    from src import tracking, train
    from src.config import select_params
    from src.sweeps import job

    value = objective(cfg.bottleneck, cfg.dropout)
    seconds = random.Random(job.trial_number(ctx)).uniform(0, 2 * SECONDS)
    tags = {"stage": "train", "data_hash": DATA_HASH, "output_dir": str(out),
            **job.trial_tags(ctx)}  # fmt: skip
    params = select_params(cfg, train.PARAMS)
    with tracking.start_run(cfg, run_name, params, tags, ctx.parent_run_id):
        run_id = tracking.active_run_id()
        tracking.log_dataset(np.zeros((10, 64)), np.arange(10), "digits-train", DATA_HASH[:12],
                             "fake")  # fmt: skip
        try:
            epochs(value, seconds, job.pruning_callbacks(ctx))
        except Exception as e:
            if not job.is_pruned(e):
                raise
            job.end_pruned_run(e)
            return {"pruned": str(e), "run_id": run_id, "data_hash": DATA_HASH}
        metrics = {"val_accuracy": value, "test_accuracy": value - 0.01, "test_loss": 1 - value,
                   "test_reconstruction_mse": 0.01, "scratch_test_accuracy": value}  # fmt: skip
        tracking.log_metrics({**metrics, "train_seconds": seconds})
        if may_be_champion(ctx, value):
            mlflow.pyfunc.log_model(name="classifier", python_model=constant_model(),
                                    pip_requirements=[])  # fmt: skip
        result = {**metrics, "train_seconds": seconds, "run_id": run_id,
                  "autoencoder_run_id": None, "data_hash": DATA_HASH,
                  "train_images_per_class": 100.0}  # fmt: skip
        tracking.log_dict(result, "result.json")
    return result


def record(line: dict) -> None:
    """Append one JSON line to SWEEP_LOAD_STATS (kept if the worker is killed later)."""
    with open(os.environ["SWEEP_LOAD_STATS"], "a") as f:
        f.write(json.dumps({"pid": os.getpid(), **line}) + "\n")


def timed(owner: Any, method: str, key: str) -> None:
    """Add the seconds of every call of owner.method to spent[key]."""
    original = getattr(owner, method)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - start

    setattr(owner, method, wrapper)


def timed_sweeper() -> None:
    """Time each trial's ask (with its first heartbeat and sampling) and run, and within them
    the study database's statements and commits and the tracking server's requests; not a
    worker's wait for the others' trials at the end."""
    import psycopg
    import requests

    from src.sweeps import optuna_sweeper

    timed(psycopg.Cursor, "execute", "storage")
    timed(psycopg.Connection, "commit", "storage")
    timed(requests.Session, "send", "tracking")
    ask, run = optuna_sweeper.asked, optuna_sweeper.OptunaSweeper.run
    started = {"ask": 0.0}

    def timed_ask(*args: Any) -> Any:
        spent.clear()
        started["ask"] = time.perf_counter()
        return ask(*args)

    def timed_run(self: Any, study: Any, trial: Any, fixed: list[str]) -> Any:
        try:
            return run(self, study, trial, fixed)
        finally:
            seconds = time.perf_counter() - started["ask"]
            record({"trial": trial.number, "seconds": seconds, **spent})

    optuna_sweeper.asked, optuna_sweeper.OptunaSweeper.run = timed_ask, timed_run


def timed_end() -> None:
    """Time the callback's end (summary; parent and champion if this worker finishes them)."""
    from src.sweeps import callback, parent

    end, finish = callback.SweepCallback.on_multirun_end, parent.finish
    finished = {"parent": False}

    def timed_finish(*args: Any) -> None:
        finished["parent"] = True
        finish(*args)

    def timed_on_end(self: Any, config: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        try:
            end(self, config, **kwargs)
        finally:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            record({"end_seconds": time.perf_counter() - start,
                    "finished_parent": finished["parent"], "max_rss_mb": rss})  # fmt: skip

    callback.SweepCallback.on_multirun_end, parent.finish = timed_on_end, timed_finish


def main() -> None:
    without_tensorflow()
    from src import train

    train.train_point = train_point
    timed_sweeper()
    timed_end()
    sys.argv = ["src.train", *sys.argv[1:]]
    os.environ["HYDRA_MAIN_MODULE"] = "__main__"  # conf/ found from src/train.py, as `python -m`
    train.main()


if __name__ == "__main__":
    main()
