"""Interruptions: Ctrl-C and SIGTERM end the MLflow run KILLED and leave the old outputs."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from tests.conftest import TINY, run_cli, run_stages

pytestmark = pytest.mark.e2e


def _training_run(client: MlflowClient, proc: subprocess.Popen):
    """The pretrain run once its first epoch is logged."""
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        exp = client.get_experiment_by_name("ae-classify")  # made by the stage itself
        runs = exp and client.search_runs([exp.experiment_id], "attributes.run_name = 'pretrain'")
        if runs and client.get_metric_history(runs[0].info.run_id, "pretrain/loss"):
            return runs[0]
        time.sleep(0.5)
    raise AssertionError(proc.stderr.read().decode()[-2000:] if proc.poll() else "no run")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_stage_ends_killed_and_keeps_old_outputs(project, sig):
    run_stages(project, stages=("prepare",))
    old = {f: f"old {f}".encode() for f in ("models/encoder.keras", "models/autoencoder.keras")}
    for f, content in old.items():
        (project / f).parent.mkdir(exist_ok=True)
        (project / f).write_bytes(content)
    uri = f"sqlite:///{project / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.pretrain", "pretrain.epochs=100000"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    client = MlflowClient(tracking_uri=uri)
    try:
        run = _training_run(client, proc)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never leave a 100000-epoch training behind when the test fails
    assert proc.returncode != 0
    last = stderr.decode().strip().splitlines()[-1]
    reason = "interrupted" if sig == signal.SIGINT else "stopped by signal 15"
    assert last == f"error: {reason}; outputs left as they were"
    assert "Traceback" not in stderr.decode()
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    assert {f: (project / f).read_bytes() for f in old} == old
    assert not list(project.glob(".outputs-*"))  # the staged new outputs were removed


def test_sigkill_while_writing_a_model_leaves_the_old_file_and_a_rerun_completes(project):
    from src import models

    run_stages(project, "bottleneck=8", "pretrain.epochs=1", stages=("prepare", "pretrain"))
    old = (project / "models/encoder.keras").read_bytes()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.pretrain", "bottleneck=16", *TINY],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    caught = False
    while proc.poll() is None:  # kill -9 the moment a model is being written
        if list(project.glob(".outputs-*/models/*")):
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
