"""Build the autoencoder and the classifier (Keras functional API), save and load them."""

from pathlib import Path

import keras
import numpy as np
from keras import layers

from src.config import UserError, atomic_path


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


def build_classifier(
    encoder: keras.Model, n_classes: int, head_units: int, dropout: float, freeze_encoder: bool
) -> keras.Model:
    """Encoder (frozen or trainable) + Dense(head_units) + Dropout(dropout) + softmax."""
    encoder.trainable = not freeze_encoder
    inputs = keras.Input(shape=encoder.input_shape[1:], name="image")
    x = encoder(inputs, training=False)
    x = layers.Dense(head_units, activation="relu", name="head_dense")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="classifier")


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
    """Save as .keras, atomically: a crash leaves the old file or none."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def load(path: str | Path) -> keras.Model:
    """Load a .keras model in safe mode, with a clear error for a missing or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found: run the stage that writes it first")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=True)
    except Exception as e:  # Keras raises many types for a damaged archive
        raise UserError(f"model file {path} cannot be loaded ({type(e).__name__}: {e})") from None
