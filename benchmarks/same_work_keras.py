"""The same work as `python -m src.train experiment=mnist pretrain.epochs=5 classify.epochs=5
dropout=0.5`, in bare Keras: the 784-512-256-32 autoencoder (MSE, Adam 1e-3, batch 128), then a
head on the frozen encoder (Dense 256 + Dropout + softmax, same optimizer and batch); no
baselines, no evaluation beyond test accuracy, no tracking. The reference of
benchmarks/overhead.py.

Usage: python benchmarks/same_work_keras.py [--epochs 5] [--dropout 0.5]
Prints one line of JSON: test accuracy (wall time is measured by the caller).
"""

import argparse
import json

import keras
import numpy as np
from keras import layers
from sklearn.model_selection import train_test_split

MNIST = "../shared/data/mnist.npz"  # relative to the repository root, like the project's path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=MNIST)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dropout", type=float, default=0.5)
    a = parser.parse_args()
    keras.utils.set_random_seed(42)
    with np.load(a.data, allow_pickle=False) as f:
        x, y = f["x_train"].astype("float32")[..., None] / 255.0, f["y_train"]
        x_test, y_test = f["x_test"].astype("float32")[..., None] / 255.0, f["y_test"]
    x, x_val, y, y_val = train_test_split(x, y, test_size=0.1, stratify=y, random_state=42)

    inputs = keras.Input(shape=(28, 28, 1))
    h = layers.Dense(256, activation="relu")(layers.Dense(512, activation="relu")(
        layers.Flatten()(inputs)))  # fmt: skip
    code = layers.Dense(32)(h)
    h = layers.Dense(512, activation="relu")(layers.Dense(256, activation="relu")(code))
    outputs = layers.Reshape((28, 28, 1))(layers.Dense(784, activation="sigmoid")(h))
    autoencoder, encoder = keras.Model(inputs, outputs), keras.Model(inputs, code)
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    autoencoder.fit(x, x, epochs=a.epochs, batch_size=128, validation_data=(x_val, x_val),
                    verbose=2)  # fmt: skip

    encoder.trainable = False
    h = layers.Dense(256, activation="relu")(encoder(inputs, training=False))
    probabilities = layers.Dense(10, activation="softmax")(layers.Dropout(a.dropout)(h))
    classifier = keras.Model(inputs, probabilities)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss="sparse_categorical_crossentropy", metrics=["accuracy"])  # fmt: skip
    classifier.fit(x, y, epochs=a.epochs, batch_size=128, validation_data=(x_val, y_val),
                   verbose=2)  # fmt: skip
    print(json.dumps({"test_accuracy": classifier.evaluate(x_test, y_test, verbose=0)[1]}))


if __name__ == "__main__":
    main()
