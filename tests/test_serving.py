"""src.serving: the logged classifier takes raw pixels, in process and behind `mlflow models
serve`, and answers as src.predict does on the same images."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from sklearn.datasets import load_digits

from src import classify, models, predict, serving, tracking, training
from tests.conftest import free_port, wait_until_answers

RAW = load_digits().images[:12]  # (12, 8, 8) floats 0..16, as a client has them


@pytest.fixture(scope="module")
def logged(tmp_path_factory, digits) -> tuple[str, dict]:
    """(model URI, record) of a tiny digits classifier logged by serving.log_classifier, in this
    worker's private SQLite store, artifacts in a temporary folder."""
    root = tmp_path_factory.mktemp("serving")
    exp = mlflow.create_experiment("serving", artifact_location=(root / "artifacts").as_uri())
    _, encoder = models.build(
        {"name": "dense", "hidden": [16], "activation": "relu"}, (8, 8, 1), 4
    )
    classifier, _ = training.fit_classifier(
        encoder, digits["x_train"][:300], digits["y_train"][:300], digits["x_val"],
        digits["y_val"], n_classes=10, head_units=16, dropout=0.0, freeze_encoder=False,
        epochs=2, batch_size=64, learning_rate=0.01, seed=0,
    )  # fmt: skip
    record = classify.preprocessing_record(digits)
    with mlflow.start_run(experiment_id=exp) as run:
        serving.log_classifier(classifier, record, digits["x_val"])
    (model,) = mlflow.search_logged_models(
        experiment_ids=[exp],
        filter_string=f"source_run_id = '{run.info.run_id}' AND name = 'classifier'",
        output_format="list",
    )  # as src.sweeps.champion finds it
    return model.model_uri, record


def predicted_by_src_predict(uri: str, tmp_path: Path) -> tuple[list[dict], np.ndarray]:
    """src.predict's rows for RAW (through an .npz, as its command line reads it) and the
    probabilities of the Keras model it loads from the MLflow model."""
    model, record = predict.load_predictor(uri)
    np.savez(tmp_path / "raw.npz", x=RAW)
    _, x = predict.read_inputs(str(tmp_path / "raw.npz"), record)
    return predict.predict(model, x, record["class_names"]), model.predict(x, verbose=0)


def test_logged_model_takes_raw_pixels_and_answers_as_src_predict(logged, tmp_path):
    uri, record = logged
    served = mlflow.pyfunc.load_model(uri).predict(RAW)
    rows, probabilities = predicted_by_src_predict(uri, tmp_path)
    assert list(served.columns) == ["class", "class_name", "probabilities"]
    assert served["class"].tolist() == [r["class"] for r in rows]
    assert served["class_name"].tolist() == [r["class_name"] for r in rows]
    np.testing.assert_allclose(np.stack(served["probabilities"]), probabilities, atol=1e-6)
    np.testing.assert_allclose(probabilities.max(1), [r["probability"] for r in rows], atol=1e-6)

    info = mlflow.models.get_model_info(uri)
    (tensor,) = info.signature.inputs.inputs
    assert tensor.shape == (-1, 8, 8) and tensor.type == np.float64  # raw digits images
    assert info.signature.outputs.input_names() == ["class", "class_name", "probabilities"]
    assert info.metadata == {"preprocessing": record}
    example = mlflow.models.Model.load(uri).load_input_example(uri)
    assert example.shape == (5, 8, 8) and 1 < example.max() <= 16  # in the dataset's own range
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().splitlines()
    assert requirements == [f"mlflow=={mlflow.__version__}", *tracking.pip_requirements()]
    files = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    assert (files / "code/src/serving.py").is_file()  # what the server imports the model from


def test_flattened_images_are_refused_by_mlflow_naming_the_expected_shape(logged):
    """MLflow's schema enforcement refuses them before Classifier.predict runs. Its message (and
    the server's HTTP 400) repeats the pixels first; the shapes come last (docs/deployment.md)."""
    uri, _ = logged
    with pytest.raises(mlflow.exceptions.MlflowException) as refused:
        mlflow.pyfunc.load_model(uri).predict(RAW[:1].reshape(1, 64))
    expected = "Shape of input (1, 64) does not match expected shape (-1, 8, 8)."
    assert str(refused.value).endswith(expected)


@pytest.mark.e2e
def test_mlflow_models_serve_answers_raw_pixels_as_src_predict(logged, tmp_path):
    uri, _ = logged
    port = free_port()
    # mlflow execs `uvicorn` by name: find it beside this Python even in a venv not activated
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager",
           "local", "--host", "127.0.0.1", "-p", str(port)]  # fmt: skip
    server = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # not the repo
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{url}/ping", server, 120)  # it loads TensorFlow first
        request = urllib.request.Request(
            f"{url}/invocations", data=json.dumps({"inputs": RAW[:2].tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
    finally:
        with contextlib.suppress(ProcessLookupError):  # the server's group may be gone already
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    rows, probabilities = predicted_by_src_predict(uri, tmp_path)
    served = answer["predictions"]
    assert [p["class"] for p in served] == [r["class"] for r in rows[:2]]
    assert [p["class_name"] for p in served] == [r["class_name"] for r in rows[:2]]
    np.testing.assert_allclose([p["probabilities"] for p in served], probabilities[:2], atol=1e-6)
