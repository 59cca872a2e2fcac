"""src.tracking in process, on a tiny Keras model and a temporary SQLite store: what a logged
model holds (signature, explicit requirements, input example, metadata) and that MLflow loads
it and it predicts, as mlflow.tensorflow.log_model's model would."""

import os
from collections.abc import Iterator

import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf

from src import models, tracking
from tests.conftest import make_cfg


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[str]:
    """One SQLite store for the module (creating its tables takes a few seconds), with the
    artifacts beside it, not in ./mlruns; MLflow's tracking URI is put back afterwards."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    root = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("ae-classify", artifact_location=(root / "artifacts").as_uri())
    yield uri
    mlflow.set_tracking_uri(previous)  # also MLFLOW_TRACKING_URI, which set_tracking_uri sets


@pytest.fixture
def cfg(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.delenv(tracking.ASYNC_BUFFERING_ENV, raising=False)  # restored afterwards
    return make_cfg("mlflow.enabled=true")


def tiny_classifier() -> keras.Model:
    keras.utils.set_random_seed(0)
    _, encoder = models.build_autoencoder((8, 8, 1), 4, [8], "relu")
    return models.build_classifier(encoder, 10, 8, 0.0, True)


def mlmodel(uri: str) -> dict:
    """The MLmodel file without what differs between any two logged models."""
    spec = mlflow.models.Model.load(uri).to_dict()
    for key in ("artifact_path", "model_uuid", "model_id", "run_id", "utc_time_created"):
        spec.pop(key, None)
    return spec


def test_logged_model_has_signature_requirements_and_example_and_predicts(cfg, tmp_path):
    classifier = tiny_classifier()
    x = np.random.default_rng(0).random((12, 8, 8, 1), dtype=np.float32)
    with tracking.start_run(cfg, "test-tracking", {"bottleneck": 4}) as run:
        tracking.log_model(classifier, "classifier", x, {"preprocessing": {"scale": 255}})
        # the same model through MLflow's own log_model (which validates the example), to compare
        reference = mlflow.tensorflow.log_model(
            classifier,
            name="reference",
            signature=mlflow.models.infer_signature(x[:5], classifier(x[:5]).numpy()),
            input_example=x[:5],
            metadata={"preprocessing": {"scale": 255}},
            pip_requirements=[
                f"tensorflow=={tf.__version__}",
                f"keras=={keras.__version__}",
                f"numpy=={np.__version__}",
            ],
        )
    logged = {
        m.name: m
        for m in mlflow.search_logged_models(
            filter_string=f"source_run_id = '{run.info.run_id}'", output_format="list"
        )
    }
    assert set(logged) == {"classifier", "reference"}
    uri = logged["classifier"].model_uri

    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None
    assert info.signature.inputs.inputs[0].shape == (-1, 8, 8, 1)
    assert info.signature.outputs.inputs[0].shape == (-1, 10)
    assert info.metadata == {"preprocessing": {"scale": 255}}
    assert set(info.flavors) == {"tensorflow", "python_function"}
    assert info.flavors["python_function"]["loader_module"] == "mlflow.tensorflow"
    assert logged["classifier"].tags == logged["reference"].tags  # same flavor recorded
    assert mlmodel(uri) == mlmodel(reference.model_uri)  # same MLmodel, bar ids and times

    requirements = mlflow.pyfunc.get_model_dependencies(uri)  # requirements.txt
    with open(requirements) as f:
        lines = f.read().splitlines()
    assert lines == [
        f"mlflow=={mlflow.__version__}",
        f"tensorflow=={tf.__version__}",
        f"keras=={keras.__version__}",
        f"numpy=={np.__version__}",
    ]

    served = mlflow.pyfunc.load_model(uri)
    expected = classifier.predict(x, verbose=0)
    np.testing.assert_allclose(served.predict(x), expected, atol=1e-5)
    example = mlflow.models.Model.load(uri).load_input_example(uri)
    np.testing.assert_array_equal(example, x[:5])  # the input example is still saved...
    np.testing.assert_allclose(served.predict(example), expected[:5], atol=1e-5)  # ...and serves
    files = os.listdir(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "m")))
    assert {"input_example.json", "serving_input_example.json", "requirements.txt"} <= set(files)


def test_metrics_logged_asynchronously_are_all_there_after_the_run(cfg):
    with tracking.start_run(cfg, "test-tracking-metrics", {}) as run:
        assert os.environ[tracking.ASYNC_BUFFERING_ENV] == "1"  # set by setup()
        callback = tracking.callbacks("pretrain/")[0]
        for epoch in range(5):
            callback.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "pretrain/loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert mlflow.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_buffering_time_in_the_environment_wins(cfg, monkeypatch):
    monkeypatch.setenv(tracking.ASYNC_BUFFERING_ENV, "3")
    tracking.setup(cfg)
    assert os.environ[tracking.ASYNC_BUFFERING_ENV] == "3"


def test_nothing_is_logged_without_a_run():
    assert mlflow.active_run() is None
    tracking.log_model(tiny_classifier(), "classifier", np.zeros((2, 8, 8, 1), np.float32))
    assert tracking.callbacks("pretrain/") == []


def test_retry_contended_retries_only_lock_errors_and_insert_races(monkeypatch):
    from src import tracking

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    attempts = []
    errors = ["(sqlite3.OperationalError) database is locked",
              'BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates unique '
              'constraint "experiment_tag_pk"']  # fmt: skip

    def flaky():
        attempts.append(1)
        if len(attempts) <= len(errors):
            raise RuntimeError(errors[len(attempts) - 1])
        return "ok"

    assert tracking.retry_contended(flaky) == "ok" and len(attempts) == 3

    def broken():
        attempts.append(1)
        raise RuntimeError("no such table: runs")

    attempts.clear()
    with pytest.raises(RuntimeError, match="no such table"):
        tracking.retry_contended(broken)
    assert len(attempts) == 1


def test_mlflow_telemetry_is_off_unless_the_environment_turns_it_on(monkeypatch):
    """Its thread removes a variable from os.environ while others read it (a failed log-batch
    at 32 workers, benchmarks/sweep_load.py)."""
    from mlflow.telemetry.client import get_telemetry_client

    from src import tracking

    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    tracking.no_telemetry()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true" and get_telemetry_client() is None
