"""Apply a trained classifier to new images: a .npz, an image file or a folder of PNG/JPEG.

python -m src.predict model=<path.keras | models:/name@champion | runs:/...> input=<...>

Preprocessing is the training code (`src.data.scale` with the pixel range recorded with the
model, resizing to the model's input size, grey or RGB as the model expects), and the record
travels with the model: a JSON file beside the .keras file, and inside the MLflow model (a
src.serving pyfunc for raw pixels; this applies the Keras model it wraps).
"""

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from src import cli
from src.files import write_csv
from src.runtime import UserError, first_line, quiet_tensorflow, user_errors

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ACCEPTED = (
    "give an .npz file (array x, x_test or images), a PNG or JPEG image, or a folder of them"
)


def preprocessing_path(model_path: str | Path) -> Path:
    """Where the preprocessing record of a .keras model lives."""
    return Path(model_path).with_suffix(".preprocessing.json")


def load_predictor(ref: str, tracking_uri: str | None = None) -> tuple[Any, dict]:
    """Return (keras model, preprocessing record) for a .keras path or an MLflow model URI."""
    from src import models

    if ref.startswith(("models:/", "runs:/")):
        import mlflow

        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        try:
            info = mlflow.models.get_model_info(ref)
            model = mlflow.pyfunc.load_model(ref).unwrap_python_model().model  # serving.Classifier
        except Exception as e:
            reason = first_line(e)
            raise UserError(f"model={ref} cannot be loaded from MLflow ({reason})") from None
        record = (info.metadata or {}).get("preprocessing")
    else:
        model = models.load(ref)
        path = preprocessing_path(ref)
        record = json.loads(path.read_text()) if path.is_file() else None
    if not record:
        raise UserError(f"model={ref} has no preprocessing record (pixel range, image shape): "
                        "retrain it with this version of src.classify")  # fmt: skip
    return model, record


def input_files(source: str) -> list[Path]:
    """The image files that input=`source` names ([] for an .npz), each one an image by its
    header: checked before TensorFlow loads, so that a wrong input is refused at once."""
    path = Path(source)
    if not path.exists():
        raise UserError(f"input={source} not found: {ACCEPTED}")
    if path.suffix == ".npz" and path.is_file():
        return []
    if not path.is_dir():
        if not is_image(path):
            raise UserError(f"input={source} is neither an .npz file nor an image: {ACCEPTED}")
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(
            f"input={source} is a folder without .png, .jpg or .jpeg files: {ACCEPTED}"
        )
    for p in files:
        if not is_image(p):
            raise UserError(f"input={source} holds {p.name}, which is not an image: {ACCEPTED}")
    return files


def is_image(path: Path) -> bool:
    """Whether Pillow, which keras.utils.load_img reads with, knows the file's format."""
    from PIL import Image

    try:
        Image.open(path).close()  # reads the header only
    except OSError:  # Pillow's UnidentifiedImageError is one
        return False
    return True


def read_inputs(source: str, record: dict) -> tuple[list[str], np.ndarray]:
    """Names and preprocessed images (n, h, w, c) in [0, 1], shaped as the model expects."""
    import keras

    from src import data, serving

    h, w, c = record["image_shape"]
    files = input_files(source)
    if not files:
        arrays = data.read_npz(source, f"input={source}")
        key = next((k for k in ("x", "x_test", "images") if k in arrays), None)
        if key is None:
            raise UserError(f"input={source} has no array x, x_test or images")
        x = serving.preprocess(arrays[key], record, f"input={source}")  # as the served model
        return [f"{source}[{i}]" for i in range(len(x))], x
    mode = "grayscale" if c == 1 else "rgb"
    images = []
    for p in files:
        try:
            img = keras.utils.load_img(p, color_mode=mode, target_size=(h, w))
        except Exception as e:  # a damaged image: its header was fine
            raise UserError(f"input image {p} cannot be read ({first_line(e)})") from None
        images.append(keras.utils.img_to_array(img) / 255.0)  # 8-bit images: 0..255 -> [0, 1]
    return [str(p) for p in files], np.stack(images).astype(np.float32)


def predict(model, x: np.ndarray, class_names: list[str], batch_size: int = 256) -> list[dict]:
    """One row per image: predicted class, its name and probability."""
    probabilities = model.predict(x, batch_size=batch_size, verbose=0)
    classes = probabilities.argmax(axis=1)
    return [
        {"class": int(k), "class_name": class_names[k], "probability": float(p[k])}
        for k, p in zip(classes, probabilities, strict=True)
    ]


@cli.one_line_errors
@hydra.main(config_path="../conf/predict", config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        if not cfg.input:
            raise UserError("input is required: input=<file.npz | image | folder of images>")
        input_files(str(cfg.input))  # a wrong input in one line, before TensorFlow loads
        quiet_tensorflow()
        from src import tracking

        model, record = load_predictor(str(cfg.model), tracking.tracking_uri(cfg.tracking_uri))
        names, x = read_inputs(str(cfg.input), record)
        rows = predict(model, x, record["class_names"], cfg.batch_size)
        write_csv(
            cfg.output,
            ["input", "class", "class_name", "probability"],
            (
                [n, r["class"], r["class_name"], f"{r['probability']:.6f}"]
                for n, r in zip(names, rows, strict=True)
            ),
        )
        counts = Counter(r["class_name"] for r in rows)
        mean_p = np.mean([r["probability"] for r in rows])
        log.info("%d images -> %s; predicted classes %s; mean probability %.3f",
                 len(rows), cfg.output, dict(sorted(counts.items())), mean_p)  # fmt: skip


if __name__ == "__main__":
    main()
