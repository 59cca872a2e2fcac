import logging

import keras
import numpy as np
import pytest

from src import models, training
from src.runtime import UserError
from src.training import denoising_pairs, fit_autoencoder, fit_classifier

DENSE = {"name": "dense", "hidden": [64], "activation": "relu"}
CONV = {"name": "conv", "filters": [8, 16], "kernel_size": 3, "activation": "relu"}


@pytest.mark.parametrize("bottleneck", [2, 8, 32])
def test_autoencoder_shapes(bottleneck):
    autoencoder, encoder = models.build_autoencoder((8, 8, 1), bottleneck, [32, 16])
    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    assert encoder(x).shape == (5, bottleneck)
    y = np.asarray(autoencoder(x))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1  # sigmoid output
    assert encoder.name == "encoder"
    assert autoencoder.get_layer("decoder").output_shape == (None, 8, 8, 1)


def test_pretraining_reduces_reconstruction_loss(digits):
    _, encoder, history = fit_autoencoder(
        digits["x_train"],
        digits["x_val"],
        model=DENSE,
        bottleneck=16,
        epochs=5,
        batch_size=64,
        learning_rate=0.005,
        loss="mse",
        seed=0,
    )
    assert history["val_loss"][-1] < 0.5 * history["val_loss"][0]
    assert encoder.output_shape == (None, 16)


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (8, 8, 1), (7, 9, 3)])
@pytest.mark.parametrize("bottleneck", [2, 16])
def test_conv_autoencoder_shapes(input_shape, bottleneck):
    autoencoder, encoder = models.build(CONV, input_shape, bottleneck)
    x = np.random.default_rng(0).random((3, *input_shape), dtype=np.float32)
    assert encoder(x).shape == (3, bottleneck)
    y = np.asarray(autoencoder(x))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert [type(layer).__name__ for layer in encoder.layers[1:5]] == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
    ]
    assert any(type(lay).__name__ == "Conv2DTranspose" for lay in autoencoder.layers[2].layers)


def test_denoising_changes_inputs_not_targets():
    x = np.random.default_rng(0).random((50, 8, 8, 1), dtype=np.float32)
    original = x.copy()
    inputs, targets = denoising_pairs(x, 0.5, seed=0)
    assert targets is x and np.array_equal(x, original)  # clean targets, x untouched
    assert inputs.shape == x.shape and inputs.dtype == np.float32
    assert np.abs(inputs - x).mean() > 0.1 and inputs.min() == 0 and inputs.max() == 1
    assert np.array_equal(inputs, denoising_pairs(x, 0.5, seed=0)[0])  # seeded
    clean_inputs, _ = denoising_pairs(x, 0.0, seed=0)
    assert clean_inputs is x  # noise_factor 0: plain autoencoder, no copy


def test_denoising_conv_autoencoder_trains(digits):
    _, encoder, history = fit_autoencoder(
        digits["x_train"],
        digits["x_val"],
        model=CONV,
        bottleneck=8,
        epochs=3,
        batch_size=64,
        learning_rate=0.005,
        loss="mse",
        seed=0,
        noise_factor=0.3,
    )
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert encoder.output_shape == (None, 8)


def _changed(a: list, b: list) -> list[bool]:
    return [not np.array_equal(u, v) for u, v in zip(a, b, strict=True)]


def _classifier(digits, freeze: bool, epochs: int = 3, encoder=None, **extra):
    """A digits classifier on a fresh dense encoder; which encoder weights training changed."""
    encoder = encoder or models.build(DENSE, (8, 8, 1), 16)[1]
    before = [w.copy() for w in encoder.get_weights()]
    classifier, history = fit_classifier(
        encoder, digits["x_train"], digits["y_train"], digits["x_val"], digits["y_val"],
        n_classes=10, head_units=32, dropout=0.2, freeze_encoder=freeze, epochs=epochs,
        batch_size=64, learning_rate=0.005, seed=0, **extra,
    )  # fmt: skip
    return classifier, history, _changed(before, encoder.get_weights())


def test_finetune_keeps_frozen_weights_then_trains_them(digits):
    _, encoder = models.build(DENSE, (8, 8, 1), 16)
    snapshots = []

    class Snapshot(keras.callbacks.Callback):  # the encoder's weights after each fit() phase
        def on_train_begin(self, logs=None):
            snapshots.append([w.copy() for w in encoder.get_weights()])

        def on_train_end(self, logs=None):
            self.on_train_begin()

    _, history, changed = _classifier(
        digits, True, epochs=2, encoder=encoder, finetune_epochs=1,
        finetune_learning_rate=1e-3, callbacks=[Snapshot()],
    )  # fmt: skip
    head_start, head_end, tune_start, tune_end = snapshots
    assert not any(_changed(head_start, head_end))  # phase 1: encoder frozen
    assert all(_changed(tune_start, tune_end))  # phase 2: every encoder weight trains
    assert len(history["val_accuracy"]) == 3 and all(changed)


def test_head_on_cached_codes_learns_what_training_through_the_encoder_learns(digits):
    """A frozen encoder's codes never change: training the head on them once computed is the
    same training as pushing every image through the encoder every epoch."""
    from src import training

    _, encoder = models.build(DENSE, (8, 8, 1), 16)
    x_test, y_test = digits["x_test"], digits["y_test"]
    on_codes, _, _ = _classifier(digits, True, epochs=20, encoder=encoder)
    keras.utils.set_random_seed(0)  # the same model, trained through the encoder
    through = models.build_classifier(encoder, 10, 32, 0.2, True)
    training.fit(
        through, digits["x_train"], digits["y_train"], (digits["x_val"], digits["y_val"]),
        learning_rate=0.005, rate_key="classify.learning_rate",
        loss="sparse_categorical_crossentropy", epochs=20, batch_size=64,
    )  # fmt: skip
    accuracy = [
        np.mean(m.predict(x_test, verbose=0).argmax(1) == y_test) for m in (on_codes, through)
    ]
    assert accuracy[0] > 0.5 and abs(accuracy[0] - accuracy[1]) <= 0.01, accuracy
    assert [layer.name for layer in on_codes.layers][-4:] == [
        "encoder",
        "head_dense",
        "head_dropout",
        "probabilities",
    ]  # the whole model is saved, as src.predict and mlflow models serve load it


def test_frozen_encoder_weights_do_not_change(digits):
    classifier, history, changed = _classifier(digits, freeze=True)
    assert not any(changed)
    assert history["val_accuracy"][-1] > 0.3  # chance is 0.1
    assert classifier.get_layer("head_dropout").rate == 0.2


def test_unfrozen_encoder_weights_train(digits):
    _, _, changed = _classifier(digits, freeze=False)
    assert all(changed)


def test_save_and_load_in_safe_mode(tmp_path):
    _, encoder = models.build_autoencoder((8, 8, 1), 4, [16])
    path = tmp_path / "encoder.keras"
    models.save(encoder, path)
    loaded = models.load(path)
    x = np.ones((2, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(loaded(x), encoder(x), rtol=1e-6)
    path.write_bytes(path.read_bytes()[:100])  # truncated file
    with pytest.raises(UserError, match="cannot be loaded"):
        models.load(path)
    with pytest.raises(UserError, match="not found"):
        models.load(tmp_path / "missing.keras")


def test_augmentation_changes_training_inputs_only(tmp_path):
    _, encoder = models.build_conv_autoencoder((12, 12, 1), 4, [4])
    augment = {"shift": 0.2, "rotation": 15, "zoom": 0.2}
    classifier = models.build_classifier(encoder, 3, 8, 0.0, True, augment)
    names = [layer.name for layer in classifier.layers]
    assert names[1:4] == ["augment_shift", "augment_rotation", "augment_zoom"]
    x = np.random.default_rng(0).random((6, 12, 12, 1), dtype=np.float32)
    predicted = classifier.predict(x, verbose=0)
    np.testing.assert_allclose(classifier(x, training=False), predicted, rtol=1e-5)
    assert not np.allclose(classifier(x, training=True), predicted)  # dropout is 0
    models.save(classifier, tmp_path / "classifier.keras")
    loaded = models.load(tmp_path / "classifier.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), predicted, rtol=1e-5)
    off = models.build_classifier(encoder, 3, 8, 0.0, True, dict.fromkeys(augment, 0.0))
    assert not [layer for layer in off.layers if layer.name.startswith("augment")]


def test_early_stopping_ends_training_and_keeps_the_best_weights(digits):
    autoencoder, _, history = fit_autoencoder(
        digits["x_train"], digits["x_val"], model=DENSE, bottleneck=8, epochs=200,
        batch_size=64, learning_rate=0.05, loss="mse", seed=0, patience=2,
    )  # fmt: skip
    losses = history["val_loss"]
    assert len(losses) < 200 and np.argmin(losses) == len(losses) - 3  # 2 epochs without better
    kept = autoencoder.evaluate(digits["x_val"], digits["x_val"], verbose=0)
    assert kept == pytest.approx(min(losses), rel=1e-4)  # the best epoch's weights, not the last


def test_epochs_are_logged_at_debug_and_keras_prints_nothing(digits, caplog, capsys):
    x = digits["x_train"][:64].reshape(64, -1)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(x.shape[1])])
    with caplog.at_level(logging.DEBUG, logger="src.training"):
        training.fit(model, x, x, (x, x), learning_rate=1e-3, rate_key="pretrain.learning_rate",
                     loss="mse", epochs=2, batch_size=32)  # fmt: skip
    epochs = [r.getMessage() for r in caplog.records if r.name == "src.training"]
    assert [e.split(":")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert "loss " in epochs[0] and "val_loss " in epochs[0]
    assert capsys.readouterr().out == ""  # no Keras progress bar or epoch line


def test_saving_the_same_model_twice_gives_the_same_bytes(tmp_path):
    """No save time and no object addresses in the .keras file: dvc repro in a fresh clone
    leaves dvc.lock unchanged."""
    import time
    import zipfile

    def build():
        inputs = keras.Input((4,), name="x")  # named, as the project's models are
        hidden = keras.layers.Dense(3, activation="relu", name="d")(inputs)
        return keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden), name="m")

    model, again = build(), build()  # the same network built twice: other objects, same weights
    again.set_weights(model.get_weights())
    models.save(model, tmp_path / "a.keras")
    time.sleep(2.1)  # the zip format's time resolution is 2 s
    models.save(again, tmp_path / "b.keras")
    assert b"shared_object_id" in zipfile.ZipFile(tmp_path / "a.keras").read("config.json")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    loaded = models.load(tmp_path / "b.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_shared_object_ids_are_numbered_in_order_not_by_address(tmp_path):
    """Keras writes Python object addresses as shared_object_id: they differ in every process."""
    key, address = "shared_object_id", 140518527139344
    config = {"a": {key: address}, "b": [{key: 99}, {"x": {key: address}}]}
    numbered = {"a": {key: 0}, "b": [{key: 1}, {"x": {key: 0}}]}
    assert models.numbered_shared_objects(config) == numbered
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(2, name="d")])
    models.save(model, tmp_path / "m.keras")
    x = np.ones((1, 4), dtype=np.float32)
    np.testing.assert_allclose(models.load(tmp_path / "m.keras").predict(x, verbose=0),
                               model.predict(x, verbose=0))  # fmt: skip
