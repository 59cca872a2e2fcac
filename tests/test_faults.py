"""Interruptions: Ctrl-C and SIGTERM end the MLflow run KILLED and leave no partial outputs."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow import MlflowClient

from tests.conftest import run_cli

TINY = ["pretrain.epochs=3", "classify.epochs=3"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_stage_ends_killed_and_writes_nothing(project, sig):
    run_cli(project, "-m", "src.prepare")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.pretrain", "pretrain.epochs=100000"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    client = MlflowClient(tracking_uri=uri)
    deadline = time.time() + 240
    run = None
    while time.time() < deadline and proc.poll() is None:  # wait until training is under way
        exp = client.get_experiment_by_name("ae-classify")
        runs = client.search_runs([exp.experiment_id], "attributes.run_name = 'pretrain'")
        if runs and client.get_metric_history(runs[0].info.run_id, "pretrain/loss"):
            run = runs[0]
            break
        time.sleep(0.5)
    assert run is not None, proc.stderr.read().decode()[-2000:] if proc.poll() else "no run"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    last = stderr.decode().strip().splitlines()[-1]
    reason = "interrupted" if sig == signal.SIGINT else "stopped by signal 15"
    assert last == f"error: {reason}; outputs left as they were"
    assert "Traceback" not in stderr.decode()
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    assert not (project / "models").exists() or not any((project / "models").iterdir())


def test_same_config_and_seed_give_identical_metrics(project):
    """Seeded Python, NumPy and TensorFlow: two runs of one config agree to the last digit."""
    import json

    for name in ("a", "b"):
        args = ["mlflow.enabled=false", "sweep.reuse_autoencoder=false", *TINY]
        run_cli(project, "-m", "src.train", f"hydra.run.dir={name}", *args)
    a, b = (json.loads((project / n / "reports/metrics.json").read_text()) for n in "ab")
    assert a == b
    assert (project / "a/models/encoder.keras").is_file()


def test_sigkill_while_writing_a_model_leaves_the_old_file_and_a_rerun_completes(project):
    from src import models

    run_cli(project, "-m", "src.prepare")
    run_cli(project, "-m", "src.pretrain", "bottleneck=8", *TINY)
    old = (project / "models/encoder.keras").read_bytes()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.pretrain", "bottleneck=16", *TINY],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    caught = False
    while proc.poll() is None:  # kill -9 the moment a model is being written
        if any(p.name.startswith(".encoder.") for p in (project / "models").iterdir()):
            proc.kill()
            caught = True
            break
        time.sleep(0.001)
    proc.wait()
    assert caught, "the stage finished before its model write was seen"
    assert (project / "models/encoder.keras").read_bytes() == old  # old file, not a torn one
    assert models.load(project / "models/encoder.keras").output_shape == (None, 8)

    run_cli(project, "-m", "src.pretrain", "bottleneck=16", *TINY)  # the rerun recovers
    assert models.load(project / "models/encoder.keras").output_shape == (None, 16)


def test_signal_during_fit_stops_after_the_batch_then_raises():
    """Ctrl-C inside TensorFlow's step function hung `src.pretrain`; stop_on_signal defers it."""
    import keras

    from src import tracking

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    batches = []

    class SendSignal(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batches.append(batch)
            if len(batches) == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    x = np.zeros((64, 4), dtype="float32")
    with pytest.raises(tracking.Terminated, match="stopped by signal 15"):
        with tracking.stop_on_signal(model):
            model.fit(x, x[:, :1], batch_size=4, epochs=50, verbose=0, callbacks=[SendSignal()])
    assert len(batches) < 16 * 2  # stopped within the first epoch or the next, not after 50
    assert signal.getsignal(signal.SIGTERM) is handler  # restored
