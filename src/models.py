"""Build the autoencoder and the classifier (Keras functional API), save and load them."""

import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from src.files import atomic_path
from src.runtime import UserError


def build_autoencoder(
    input_shape: tuple[int, ...], bottleneck: int, hidden: list[int], activation: str = "relu"
) -> tuple[keras.Model, keras.Model]:
    """Dense autoencoder: flatten -> hidden -> Dense(bottleneck) -> mirrored decoder -> sigmoid.

    Returns (autoencoder, encoder); the encoder is a sub-model of the autoencoder.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation=activation, name=f"encoder_dense_{i}")(x)
    code = layers.Dense(bottleneck, name="code")(x)
    encoder = keras.Model(inputs, code, name="encoder")

    code_in = keras.Input(shape=(bottleneck,), name="code")
    x = code_in
    for i, units in enumerate(reversed(hidden)):
        x = layers.Dense(units, activation=activation, name=f"decoder_dense_{i}")(x)
    n_pixels = 1
    for d in input_shape:
        n_pixels *= d
    x = layers.Dense(n_pixels, activation="sigmoid", name="pixels")(x)
    decoder = keras.Model(code_in, layers.Reshape(input_shape, name="image")(x), name="decoder")

    autoencoder = keras.Model(inputs, decoder(encoder(inputs)), name="autoencoder")
    return autoencoder, encoder


def conv_encoder(
    input_shape: tuple[int, ...],
    bottleneck: int,
    filters: list[int],
    kernel_size: int,
    activation: str,
) -> tuple[keras.Model, tuple[int, ...]]:
    """(Conv2D, MaxPooling2D) per filter count -> Flatten -> Dense(bottleneck): the encoder, and
    the shape of its last feature map (what the decoder rebuilds)."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(
            f, kernel_size, padding="same", activation=activation, name=f"encoder_conv_{i}"
        )(x)
        x = layers.MaxPooling2D(2, padding="same", name=f"encoder_pool_{i}")(x)
    feature_shape = tuple(x.shape[1:])
    x = layers.Flatten(name="flatten")(x)
    code = layers.Dense(bottleneck, name="code")(x)
    return keras.Model(inputs, code, name="encoder"), feature_shape


def conv_decoder(
    input_shape: tuple[int, ...],
    bottleneck: int,
    feature_shape: tuple[int, ...],
    filters: list[int],
    kernel_size: int,
    activation: str,
) -> keras.Model:
    """Dense -> Reshape(feature_shape) -> (Conv2DTranspose stride 2) per filter count, in
    reverse -> Conv2D sigmoid, cropped to input_shape: the mirror of conv_encoder."""
    code_in = keras.Input(shape=(bottleneck,), name="code")
    n_features = feature_shape[0] * feature_shape[1] * feature_shape[2]
    x = layers.Dense(n_features, activation=activation, name="decoder_dense")(code_in)
    x = layers.Reshape(feature_shape, name="decoder_reshape")(x)
    for i, f in enumerate(reversed(filters)):
        x = layers.Conv2DTranspose(
            f,
            kernel_size,
            strides=2,
            padding="same",
            activation=activation,
            name=f"decoder_deconv_{i}",
        )(x)
    x = layers.Conv2D(
        input_shape[-1], kernel_size, padding="same", activation="sigmoid", name="pixels"
    )(x)
    extra_h, extra_w = x.shape[1] - input_shape[0], x.shape[2] - input_shape[1]
    if extra_h or extra_w:  # pooling rounded odd sizes up
        x = layers.Cropping2D(((0, extra_h), (0, extra_w)), name="crop")(x)
    return keras.Model(code_in, x, name="decoder")


def build_conv_autoencoder(
    input_shape: tuple[int, ...],
    bottleneck: int,
    filters: list[int],
    kernel_size: int = 3,
    activation: str = "relu",
) -> tuple[keras.Model, keras.Model]:
    """Conv autoencoder: conv_encoder's (Conv2D, MaxPooling2D) per filter count ->
    Dense(bottleneck) code, then conv_decoder's mirror of it, cropped to the input size.

    Returns (autoencoder, encoder); the encoder is a sub-model of the autoencoder.
    """
    encoder, feature_shape = conv_encoder(
        input_shape, bottleneck, filters, kernel_size, activation
    )
    decoder = conv_decoder(
        input_shape, bottleneck, feature_shape, filters, kernel_size, activation
    )
    inputs = encoder.input
    autoencoder = keras.Model(inputs, decoder(encoder(inputs)), name="autoencoder")
    return autoencoder, encoder


def build_ladder(
    input_shape: tuple[int, ...],
    bottleneck: int,
    hidden: list[int],
    noise_std: float,
    denoising_weights: list[float],
    variant: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    decay_start: float,
) -> tuple[keras.Model, keras.Model]:
    """The Ladder network (src/ladder.py, docs/ladder.md): its training model, carrying its
    schedule, and its clean encoder, whose `bottleneck` outputs are the class scores.

    Returns (ladder, encoder); the encoder is plain Keras layers, a copy of the ladder's."""
    from src import ladder

    schedule = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                "decay_start": decay_start}  # fmt: skip
    return ladder.build(input_shape, bottleneck, hidden, noise_std, denoising_weights, variant,
                        schedule)  # fmt: skip


BUILDERS = {"dense": build_autoencoder, "conv": build_conv_autoencoder, "ladder": build_ladder}


def build(
    model: Mapping, input_shape: tuple[int, ...], bottleneck: int
) -> tuple[keras.Model, keras.Model]:
    """(autoencoder, encoder) for the `model` config (conf/model/*.yaml)."""
    if model["name"] not in BUILDERS:
        raise UserError(f"model.name={model['name']!r} is not a known model")
    settings = {k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
                for k, v in model.items() if k != "name"}  # fmt: skip
    return BUILDERS[model["name"]](input_shape, bottleneck, **settings)


def build_classifier(
    encoder: keras.Model,
    n_classes: int,
    head_units: int,
    dropout: float,
    freeze_encoder: bool,
    augment: Mapping[str, float] | None = None,
) -> keras.Model:
    """[Random shift, rotation, zoom] + encoder (frozen or trainable) + Dense(head_units) +
    Dropout(dropout) + softmax. The augmentation layers (`augment`: shift and zoom as fractions
    of the image size, rotation in degrees; 0 = off) act in training only, as in keras.io's
    image classification examples."""
    encoder.trainable = not freeze_encoder
    inputs = keras.Input(shape=encoder.input_shape[1:], name="image")
    x = inputs
    a = augment or {}
    if a.get("shift"):
        x = layers.RandomTranslation(a["shift"], a["shift"], "constant", name="augment_shift")(x)
    if a.get("rotation"):
        x = layers.RandomRotation(a["rotation"] / 360, "constant", name="augment_rotation")(x)
    if a.get("zoom"):
        x = layers.RandomZoom(a["zoom"], fill_mode="constant", name="augment_zoom")(x)
    x = encoder(x, training=False)
    x = layers.Dense(head_units, activation="relu", name="head_dense")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="classifier")


def head_of(classifier: keras.Model, n_codes: int) -> keras.Model:
    """The classifier's head alone, codes in and probabilities out, sharing its layers: training
    it trains the classifier's head."""
    codes = keras.Input(shape=(n_codes,), name="code")
    x = codes
    for name in ("head_dense", "head_dropout", "probabilities"):
        x = classifier.get_layer(name)(x)
    return keras.Model(codes, x, name="head")


def build_linear_encoder(
    input_shape: tuple[int, ...], weights: np.ndarray, bias: np.ndarray, name: str
) -> keras.Model:
    """Flatten + one Dense layer with the given weights, e.g. a PCA projection as an encoder."""
    inputs = keras.Input(shape=input_shape, name="image")
    dense = layers.Dense(weights.shape[1], name="code")
    code = dense(layers.Flatten(name="flatten")(inputs))
    dense.set_weights([weights, bias])
    return keras.Model(inputs, code, name=name)


def save(model: keras.Model, path: str | Path) -> None:
    """Save as .keras, atomically (a crash leaves the old file or none) and reproducibly: the
    same weights give the same bytes, so that `dvc repro` in a fresh clone leaves dvc.lock as
    it was (reproducible_keras)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        reproducible_keras(tmp)


def reproducible_keras(path: str | Path) -> None:
    """Rewrite a .keras zip without what changes from save to save: the save time (metadata.json's
    date_saved, the entries' zip times: every entry dated 1980-01-01) and config.json's
    shared_object_id values, which are Python object addresses, numbered 0, 1, ... in order of
    first appearance instead (load_model only matches them with each other)."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, content in entries:
            if info.filename == "metadata.json":
                metadata = {k: v for k, v in json.loads(content).items() if k != "date_saved"}
                content = json.dumps(metadata).encode()
            elif info.filename == "config.json":
                content = json.dumps(numbered_shared_objects(json.loads(content))).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = info.compress_type
            archive.writestr(fixed, content)


def numbered_shared_objects(config: Any, ids: dict | None = None) -> Any:
    """`config` with each distinct shared_object_id replaced by its order of first appearance."""
    ids = {} if ids is None else ids
    if isinstance(config, list):
        return [numbered_shared_objects(c, ids) for c in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key == "shared_object_id":
            out[key] = ids.setdefault(value, len(ids))
        else:
            out[key] = numbered_shared_objects(value, ids)
    return out


def load(path: str | Path) -> keras.Model:
    """Load a .keras model in safe mode, with a clear error for a missing or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found: run the stage that writes it first")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=True)
    except Exception as e:  # Keras raises many types for a damaged archive
        raise UserError(f"model file {path} cannot be loaded ({type(e).__name__}: {e})") from None
