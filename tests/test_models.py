import numpy as np
import pytest

from src import models
from src.classify import fit_classifier
from src.config import UserError
from src.pretrain import fit_autoencoder


@pytest.mark.parametrize("bottleneck", [2, 8, 32])
def test_autoencoder_shapes(bottleneck):
    autoencoder, encoder = models.build_autoencoder((8, 8, 1), bottleneck, [32, 16])
    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    assert encoder(x).shape == (5, bottleneck)
    y = np.asarray(autoencoder(x))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1  # sigmoid output
    assert encoder.name == "encoder" and autoencoder.get_layer("decoder") is not None


def test_pretraining_reduces_reconstruction_loss(digits):
    _, encoder, history = fit_autoencoder(
        digits["x_train"],
        digits["x_val"],
        bottleneck=16,
        hidden=[64],
        activation="relu",
        epochs=5,
        batch_size=64,
        learning_rate=0.005,
        loss="mse",
        seed=0,
    )
    assert history["val_loss"][-1] < 0.5 * history["val_loss"][0]
    assert encoder.output_shape == (None, 16)


def _classifier(digits, freeze: bool):
    _, encoder = models.build_autoencoder((8, 8, 1), 16, [64])
    before = [w.copy() for w in encoder.get_weights()]
    classifier, history = fit_classifier(
        encoder,
        digits["x_train"],
        digits["y_train"],
        digits["x_val"],
        digits["y_val"],
        n_classes=10,
        head_units=32,
        dropout=0.2,
        freeze_encoder=freeze,
        epochs=3,
        batch_size=64,
        learning_rate=0.005,
        seed=0,
    )
    changed = [
        not np.array_equal(a, b) for a, b in zip(before, encoder.get_weights(), strict=True)
    ]
    return classifier, history, changed


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
