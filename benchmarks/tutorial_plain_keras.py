"""The tutorial's steps in plain Keras, the reference for benchmarks/pipeline_tax.py: load MNIST,
train a dense autoencoder, train a softmax head on the frozen encoder, test it, save the models.

Usage: python benchmarks/tutorial_plain_keras.py [--epochs 10] [--batch-size 256] [--ae-only]
Prints one line of JSON: seconds (in-process, after imports), val loss, test accuracy.
"""

import argparse
import json
import time

import keras
import numpy as np
from keras import layers

MNIST = "../shared/data/mnist.npz"  # relative to the repository root, like the project's path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=MNIST)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument("--ae-only", action="store_true", help="stop after the autoencoder")
    a = parser.parse_args()
    start = time.perf_counter()
    keras.utils.set_random_seed(42)

    with np.load(a.data) as f:
        x_train, y_train = f["x_train"].astype("float32") / 255.0, f["y_train"]
        x_test, y_test = f["x_test"].astype("float32") / 255.0, f["y_test"]
    x_val, y_val, x_train, y_train = x_train[:5000], y_train[:5000], x_train[5000:], y_train[5000:]

    # dense autoencoder 784-128-64-32-64-128-784
    inputs = keras.Input(shape=(28, 28))
    x = layers.Flatten()(inputs)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dense(64, activation="relu")(x)
    code = layers.Dense(32)(x)
    x = layers.Dense(64, activation="relu")(code)
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Reshape((28, 28))(layers.Dense(784, activation="sigmoid")(x))
    autoencoder = keras.Model(inputs, outputs)
    encoder = keras.Model(inputs, code)
    autoencoder.compile(optimizer=keras.optimizers.Adam(a.learning_rate), loss="mse")
    history = autoencoder.fit(
        x_train, x_train, epochs=a.epochs, batch_size=a.batch_size, shuffle=True,
        validation_data=(x_val, x_val), verbose=2,
    )  # fmt: skip
    autoencoder.save("autoencoder.keras")
    encoder.save("encoder.keras")
    result = {"val_loss": history.history["val_loss"][-1]}

    if not a.ae_only:  # frozen encoder + Dense(64) + Dropout(0.2) + softmax
        encoder.trainable = False
        h = layers.Dense(64, activation="relu")(encoder(inputs, training=False))
        probs = layers.Dense(10, activation="softmax")(layers.Dropout(0.2)(h))
        classifier = keras.Model(inputs, probs)
        classifier.compile(
            optimizer=keras.optimizers.Adam(a.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        classifier.fit(
            x_train, y_train, epochs=a.epochs, batch_size=a.batch_size, shuffle=True,
            validation_data=(x_val, y_val), verbose=2,
        )  # fmt: skip
        classifier.save("classifier.keras")
        result["test_accuracy"] = classifier.evaluate(x_test, y_test, verbose=0)[1]
    print(json.dumps({"seconds": time.perf_counter() - start, **result}))


if __name__ == "__main__":
    main()
