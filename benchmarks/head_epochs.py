"""Per-epoch cost of a small head: Keras' numpy input path against one tf.data pipeline, with 1
or 16 steps per call. The classifier head on digits codes (1257 x 32 -> 64 -> 10, batch 64,
100 epochs, validation every epoch) is mostly per-epoch overhead, which src.training.fit cut.

Usage: python benchmarks/head_epochs.py [--repeats 3]
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import _common as c  # noqa: E402
from benchmarks._common import header, load_avg, median, table, timed  # noqa: E402
from src import training  # noqa: E402

EPOCHS, BATCH = 100, 64


def head() -> keras.Model:
    inputs = keras.Input((32,))
    x = keras.layers.Dense(64, activation="relu")(inputs)
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def keras_numpy(x, y, xv, yv, steps: int) -> float:
    """model.fit on the arrays, as the project did before (and as most scripts do)."""
    model = head()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=steps)  # fmt: skip
    history = model.fit(x, y, validation_data=(xv, yv), epochs=EPOCHS, batch_size=BATCH,
                        shuffle=True, verbose=0)  # fmt: skip
    return history.history["val_accuracy"][-1]


def tf_data(x, y, xv, yv, steps: int) -> float:
    """The same fit on one tf.data pipeline per fit (src.training.batches)."""
    model = head()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=steps)  # fmt: skip
    history = model.fit(training.batches(x, y, BATCH, shuffle=True),
                        validation_data=training.batches(xv, yv, BATCH, shuffle=False),
                        epochs=EPOCHS, shuffle=False, verbose=0)  # fmt: skip
    return history.history["val_accuracy"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    started = c.meta()
    print(header(f"Per-epoch cost of a digits-sized head ({EPOCHS} epochs, batch {BATCH})"))
    rng = np.random.default_rng(0)  # codes of digits' size; the labels follow the codes
    w = rng.standard_normal((32, 10))
    x, xv = rng.standard_normal((1257, 32), "float32"), rng.standard_normal((180, 32), "float32")
    y, yv = (x @ w).argmax(1), (xv @ w).argmax(1)
    spe = training.STEPS_PER_EXECUTION
    variants = {
        "Keras numpy input, 1 step per call (before)": (keras_numpy, 1),
        f"Keras numpy input, {spe} steps per call": (keras_numpy, spe),
        "one tf.data pipeline, 1 step per call": (tf_data, 1),
        f"one tf.data pipeline, {spe} steps per call (src.training.fit)": (tf_data, spe),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    accuracy: dict[str, float] = {}
    for _ in range(a.repeats):  # round-robin, so that load changes hit every variant
        for name, (fn, steps) in variants.items():
            keras.utils.set_random_seed(0)
            seconds, accuracy[name] = timed(lambda fn=fn, steps=steps: fn(x, y, xv, yv, steps))
            times[name].append(seconds)
    before = median(times[next(iter(variants))])
    rows = [[name, median(t), median(t) / before, 1000 * median(t) / EPOCHS, accuracy[name]]
            for name, t in times.items()]  # fmt: skip
    print(table(["variant", "fit (s, median)", "x before", "ms per epoch", "val accuracy (last)"],
                rows))  # fmt: skip
    print(f"\n{a.repeats} repeats, round-robin; load average at the end {load_avg()}")
    per_variant = {
        name: {"seconds": t, "median": median(t), "x_before": median(t) / before,
               "val_accuracy": accuracy[name]}
        for name, t in times.items()
    }  # fmt: skip
    c.write_results("head_epochs", {"epochs": EPOCHS, "batch": BATCH, "repeats": a.repeats,
                                  "blas_env": c.blas_env(),
                                  "variants": per_variant}, started)  # fmt: skip


if __name__ == "__main__":
    main()
