"""Integration: an MLflow tracking server on PostgreSQL, and a parallel sweep logging to it.

PostgreSQL comes from Debian's `postgresql` package (.ci/run installs it when absent) and runs
on loopback as its own `postgres` user under a temporary data folder.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import free_port, run_cli

pytestmark = pytest.mark.e2e
TINY = ["pretrain.epochs=2", "classify.epochs=2"]


def _pg_bin() -> Path:
    """The folder of PostgreSQL's server programs (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("no PostgreSQL in /usr/lib/postgresql: apt-get install postgresql")
    if os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("PostgreSQL runs as the postgres user here: needs root and runuser")
    return Path(found[-1]).parent


def _as_postgres(*cmd: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True)


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1; yields its SQLAlchemy URI."""
    pg = _pg_bin()
    data = Path(tempfile.mkdtemp(prefix="ae-classify-pg-"))
    shutil.chown(data, "postgres", "postgres")
    port = free_port()
    _as_postgres(str(pg / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    _as_postgres(str(pg / "pg_ctl"), "-D", str(data / "db"), "-o", options,
                 "-l", str(data / "log"), "-w", "start")  # fmt: skip
    try:
        _as_postgres(str(pg / "createdb") if (pg / "createdb").exists() else "createdb",
                     "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")  # fmt: skip
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        _as_postgres(str(pg / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def tracking_server(postgres, tmp_path):
    """`mlflow server` on PostgreSQL with a local artifact destination; yields its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres,
           "--artifacts-destination", str(tmp_path / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-3000:]
                assert time.perf_counter() - start < 180, "mlflow server did not start"
                time.sleep(0.5)
        print(f"mlflow server on PostgreSQL ready in {time.perf_counter() - start:.1f} s")
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)


def test_parallel_sweep_logs_everything_to_the_server(project, tracking_server):
    run_cli(project, "-m", "src.train", "mlflow=server", "bottleneck=4", "dropout=0.0,0.5",
            *TINY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "-m",
            env={"MLFLOW_TRACKING_URI": tracking_server})  # fmt: skip
    assert not (project / "mlflow.db").exists()  # nothing went to a local store
    client = MlflowClient(tracking_uri=tracking_server)
    exp = client.get_experiment_by_name("ae-classify")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        history = client.get_metric_history(child.info.run_id, "classify/val_accuracy")
        assert [m.step for m in history] == [0, 1]
        files = {a.path for a in client.list_artifacts(child.info.run_id, "evaluation")}
        assert "evaluation/metrics.json" in files
        local = Path(client.download_artifacts(child.info.run_id, "evaluation/metrics.json"))
        written = json.loads(local.read_text())  # the job's metrics.json, through the server
        assert written["test_accuracy"] == pytest.approx(child.data.metrics["test_accuracy"])
    summary = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert "summary/summary.csv" in summary
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert sum(m.name == "classifier" for m in models) == 2
    assert client.get_model_version_by_alias("ae-classify-digits", "champion")
