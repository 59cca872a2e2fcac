"""`python -m src.train ... -m` in the test process: Hydra's basic launcher runs every job here,
so a sweep costs its training only, not a Python start and a TensorFlow import per command."""

import os
import sys
from pathlib import Path
from unittest import mock

import pytest
from mlflow import MlflowClient


def train_multirun(workdir: Path, *overrides: str) -> None:
    """Run the sweep as the command line would in `workdir` (its multirun/, .cache/ and
    mlflow.db); raises SystemExit as the command exits, e.g. when a point failed."""
    import runpy

    import mlflow
    from hydra.core.global_hydra import GlobalHydra

    old_uri = mlflow.get_tracking_uri()
    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    cwd = Path.cwd()
    with mock.patch.object(sys, "argv", ["src.train", *overrides, "-m"]):
        with mock.patch.dict(os.environ, store):
            os.chdir(workdir)  # relative paths (multirun/, .cache, the study) as a user's
            try:
                runpy.run_module("src.train", run_name="__main__")  # as `python -m` runs it
            finally:
                os.chdir(cwd)
                GlobalHydra.instance().clear()
                mlflow.set_tracking_uri(old_uri)


def client_of(workdir: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")


def family(client: MlflowClient) -> tuple:
    """(the one parent run, its children) in the ae-classify experiment."""
    exp = client.get_experiment_by_name("ae-classify")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1, [p.info.run_name for p in parents]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


def sweep_dir(workdir: Path) -> Path:
    """The latest sweep folder under workdir/multirun."""
    found = sorted(p.parent for p in workdir.glob("multirun/*/*/multirun.yaml"))
    if not found:
        pytest.fail(f"no sweep folder in {workdir}")
    return found[-1]
