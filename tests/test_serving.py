"""src.serving: the logged classifier takes raw pixels, in process and behind `mlflow models
serve`, and answers as src.predict does on the same images; it refuses other shapes in one
sentence."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
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
    assert info.signature.inputs is None  # Classifier checks requests itself (below)
    assert info.signature.outputs.input_names() == ["class", "class_name", "probabilities"]
    assert info.metadata == {"preprocessing": record}
    example = mlflow.models.Model.load(uri).load_input_example(uri)
    assert example.shape == (5, 8, 8) and 1 < example.max() <= 16  # in the dataset's own range
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().splitlines()
    assert requirements == [f"mlflow=={mlflow.__version__}", *tracking.pip_requirements()]
    files = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    assert (files / "code/src/serving.py").is_file()  # what the server imports the model from


# What the served model answers to a request of another shape: one sentence, no pixels
REFUSED = ("inputs must be a batch of images of shape (n, 8, 8) with pixels in 0..16, as the "
           "training images; got shape {}")  # fmt: skip


@pytest.mark.parametrize("x", [RAW[:1].reshape(1, 64), RAW[:2, ..., None], RAW[0], RAW[:, :4]],
                         ids=["flattened", "channel axis", "one image", "cropped"])  # fmt: skip
def test_other_shapes_are_refused_naming_the_shape_without_the_pixels(logged, x):
    uri, _ = logged
    with pytest.raises(serving.RequestError) as refused:
        mlflow.pyfunc.load_model(uri).predict(x)
    assert str(refused.value) == REFUSED.format(x.shape)
    refused.value.message = f"Failed to predict data '{x}'. {refused.value.message}"  # as MLflow
    answer = json.loads(refused.value.serialize_as_json())  # the scoring server's HTTP body
    assert answer == {"error_code": "INVALID_PARAMETER_VALUE", "message": REFUSED.format(x.shape)}
    assert refused.value.get_http_status_code() == 400


def test_integer_pixels_are_taken_and_text_is_refused(logged):
    model = mlflow.pyfunc.load_model(logged[0])
    as_floats, as_ints = model.predict(RAW[:3]), model.predict(RAW[:3].astype(int))
    assert as_ints["class"].tolist() == as_floats["class"].tolist()
    with pytest.raises(serving.RequestError, match=r"got values of type <U"):
        model.predict(np.full((1, 8, 8), "x"))


# What reads as an error or a warning in a server's log: TensorFlow's C++ start-up lines
# (`E0000 ... cuInit`, `I0000 ... cudart_stub`), progress bars, Python warnings
NOISE = ("I0000", "E0000", "W0000", "absl::", "cuInit", "cudart_stub", "Downloading artifacts",
         "WARNING", "Warning", "Traceback")  # fmt: skip


def post(url: str, inputs: list) -> tuple[int, dict]:
    """POST {"inputs": inputs} to a scoring server's /invocations: (HTTP status, JSON answer)."""
    request = urllib.request.Request(f"{url}/invocations",
                                     data=json.dumps({"inputs": inputs}).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.e2e
def test_mlflow_models_serve_answers_raw_pixels_as_src_predict(logged, tmp_path):
    """Started as docs/deployment.md starts it: a log without TensorFlow's C++ lines, warnings
    or progress bars; a flattened request gets a one-sentence HTTP 400."""
    uri, _ = logged
    port = free_port()
    # mlflow execs `uvicorn` by name: find it beside this Python even in a venv not activated
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # fmt: skip
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as in a user's shell
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager",
           "local", "--host", "127.0.0.1", "-p", str(port)]  # fmt: skip
    server = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # not the repo
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{url}/ping", server, 120)  # it loads TensorFlow first
        status, answer = post(url, RAW[:2].tolist())
        flat_status, refusal = post(url, RAW[:1].reshape(1, 64).tolist())
    finally:
        with contextlib.suppress(ProcessLookupError):  # the server's group may be gone already
            os.killpg(server.pid, signal.SIGTERM)
        log = server.communicate(timeout=30)[1]
    rows, probabilities = predicted_by_src_predict(uri, tmp_path)
    served = answer["predictions"]
    assert status == 200
    assert [p["class"] for p in served] == [r["class"] for r in rows[:2]]
    assert [p["class_name"] for p in served] == [r["class_name"] for r in rows[:2]]
    np.testing.assert_allclose([p["probabilities"] for p in served], probabilities[:2], atol=1e-6)
    assert flat_status == 400
    assert refusal == {"error_code": "INVALID_PARAMETER_VALUE",
                       "message": REFUSED.format((1, 64))}  # fmt: skip
    assert not [line for line in log.splitlines() if any(n in line for n in NOISE)], log
