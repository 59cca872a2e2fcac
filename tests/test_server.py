"""Integration: an MLflow tracking server on PostgreSQL, and a parallel sweep logging to it.

The `postgres` and `tracking_server` fixtures are in conftest.py (tests/test_search.py uses
them too).
"""

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import TINY, run_cli

pytestmark = pytest.mark.e2e


def test_parallel_sweep_logs_everything_to_the_server(project, tracking_server):
    proc = run_cli(project, "-m", "src.train", "mlflow=server", "bottleneck=4", "dropout=0.0,0.5",
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
    champions = client.search_model_versions("name = 'ae-classify-digits'")
    assert len(champions) == 1, (proc.stdout + proc.stderr)[-3000:]
    assert client.get_model_version_by_alias("ae-classify-digits", "champion")
