"""The classifier as an MLflow pyfunc model that takes raw pixels: the Keras model behind the
training preprocessing (its record: pixel range, image shape, class names), so that
`mlflow models serve` accepts the images a client has and answers with classes and names, and
refuses other requests with a short HTTP 400 saying what it takes."""

import json
import tempfile
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from src import data, models
from src.runtime import UserError

# What MLflow runs to load the model ("models from code", no pickle), beside a copy of src/
MODEL_CODE = Path(__file__).resolve().with_name("served_model.py")


def preprocess(x: np.ndarray, record: dict, what: str = "images") -> np.ndarray:
    """Images (n, h, w) or (n, h, w, 1|3) in the recorded pixel range -> the model's input."""
    h, w, c = record["image_shape"]
    x = x[..., None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(f"{what}: images must be (n, h, w) or (n, h, w, 1|3), got {x.shape}")
    x = data.scale(x, *record["pixel_range"])
    if x.shape[-1] != c:  # grey <-> RGB, as the model expects
        x = x.mean(axis=-1, keepdims=True) if c == 1 else np.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (h, w):
        x = np.asarray(keras.ops.image.resize(x, (h, w)))
    return x


def raw_pixels(x: np.ndarray, record: dict) -> np.ndarray:
    """Prepared images back in the dataset's own range and shape ((n, h, w) if grey), float64."""
    lo, hi = record["pixel_range"]
    raw = lo + x.astype(np.float64) * (hi - lo)
    return raw[..., 0] if raw.shape[-1] == 1 else raw


def classify(model: keras.Model, x: np.ndarray, record: dict) -> pd.DataFrame:
    """Class, class name and class probabilities of each raw image."""
    probabilities = model.predict(preprocess(x, record), verbose=0)
    classes = probabilities.argmax(axis=1)
    names = np.asarray(record["class_names"])[classes]
    return pd.DataFrame(
        {"class": classes, "class_name": names, "probabilities": list(probabilities)}
    )


class RequestError(MlflowException):
    """A request the served model refuses: HTTP 400 with this message alone. MLflow's scoring
    server puts the request's data in front of a model's message (every pixel of a small
    request) and answers with serialize_as_json, which leaves it out."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)
        self.short = message

    def serialize_as_json(self) -> str:
        return json.dumps({"error_code": self.error_code, "message": self.short})


def served_shape(record: dict) -> tuple[int, ...]:
    """An image's shape in a request: (h, w) for grey images, (h, w, 3) for colour ones."""
    h, w, c = record["image_shape"]
    return (h, w) if c == 1 else (h, w, c)


def checked_request(model_input: object, record: dict) -> np.ndarray:
    """The request's images as float64, or a RequestError naming the shape and pixels it
    takes. The check is the model's, not its signature's: MLflow's refusal repeats the pixels."""
    x = np.asarray(model_input)
    shape, (lo, hi) = served_shape(record), record["pixel_range"]
    numeric = np.issubdtype(x.dtype, np.number)
    if numeric and x.shape[1:] == shape and x.ndim == len(shape) + 1:
        return x.astype(np.float64)
    got = f"shape {x.shape}" if numeric else f"values of type {x.dtype}"
    expected = ", ".join(["n", *map(str, shape)])
    raise RequestError(
        f"inputs must be a batch of images of shape ({expected}) with pixels in {lo:g}..{hi:g}, "
        f"as the training images; got {got}"
    )


class Classifier(mlflow.pyfunc.PythonModel):
    """The logged Keras classifier (artifact `classifier`) with its record (the model config)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = models.load(context.artifacts["classifier"])
        self.record = context.model_config

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict | None = None,
    ) -> pd.DataFrame:
        return classify(self.model, checked_request(model_input, self.record), self.record)


def signature(raw: np.ndarray, output: pd.DataFrame) -> "mlflow.models.ModelSignature":
    """The output's signature, inferred from an example (without MLflow's hint that the integer
    `class` column cannot hold missing values: it never does). No input schema: Classifier
    checks requests itself (checked_request); the input example shows one."""
    import warnings

    from mlflow.models import ModelSignature, infer_signature

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        return ModelSignature(outputs=infer_signature(raw, output).outputs)


def log_classifier(
    model: keras.Model, record: dict, x_example: np.ndarray, name: str = "classifier"
) -> None:
    """Log `model` as a Classifier pyfunc, its signature inferred on raw pixels of x_example."""
    if not mlflow.active_run():
        return
    from src import tracking

    raw = raw_pixels(x_example[:5], record)
    output = classify(model, raw, record)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classifier.keras"
        models.save(model, path)
        mlflow.pyfunc.log_model(
            name=name,
            python_model=str(MODEL_CODE),
            artifacts={"classifier": str(path)},
            model_config=record,
            code_paths=[str(MODEL_CODE.parent)],
            signature=signature(raw, output),
            input_example=raw,
            metadata={"preprocessing": record},
            pip_requirements=tracking.pip_requirements(),
        )
