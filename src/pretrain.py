"""Stage 2: train the (denoising) autoencoder on reconstruction; save encoder and autoencoder."""

import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from src.config import UserError, file_md5, select_params, user_errors, validate

log = logging.getLogger(__name__)

PARAMS = ["model", "bottleneck", "seed", "pretrain"]


def denoising_pairs(
    x: np.ndarray, noise_factor: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets): x plus Gaussian noise * noise_factor, clipped to [0, 1]; x itself."""
    if noise_factor == 0:
        return x, x
    noise = np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)
    noise *= noise_factor
    noise += x
    return np.clip(noise, 0, 1, out=noise), x


def fit_autoencoder(
    x_train: np.ndarray,
    x_val: np.ndarray,
    *,
    model: Mapping,
    bottleneck: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    loss: str,
    seed: int,
    noise_factor: float = 0.0,
    callbacks: list | None = None,
) -> tuple:
    """Return (autoencoder, encoder, history) trained to reconstruct x_train (from noisy inputs
    when noise_factor > 0: a denoising autoencoder)."""
    import keras

    from src import models, tracking

    keras.utils.set_random_seed(seed)
    autoencoder, encoder = models.build(model, x_train.shape[1:], bottleneck)
    autoencoder.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    with tracking.stop_on_signal(autoencoder):
        history = autoencoder.fit(
            *denoising_pairs(x_train, noise_factor, seed),
            validation_data=denoising_pairs(x_val, noise_factor, seed + 1),
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            verbose=1 if sys.stdout.isatty() else 2,
            callbacks=[keras.callbacks.TerminateOnNaN(), *(callbacks or [])],
        )
    if not np.isfinite(history.history["loss"][-1]):
        raise UserError("pretrain loss became NaN or infinite: lower pretrain.learning_rate")
    return autoencoder, encoder, history.history


def run(cfg: DictConfig, arrays: dict[str, np.ndarray], out: Path) -> tuple:
    """Train, then write encoder, autoencoder and history under `out`; log them to MLflow."""
    from src import data, models, tracking

    n_inputs = int(np.prod(arrays["x_train"].shape[1:]))
    if cfg.bottleneck > n_inputs:
        raise UserError(
            f"bottleneck={cfg.bottleneck} is larger than the {n_inputs} input "
            "pixels: an autoencoder must compress"
        )
    p = cfg.pretrain
    autoencoder, encoder, history = fit_autoencoder(
        arrays["x_train"],
        arrays["x_val"],
        model=cfg.model,
        bottleneck=cfg.bottleneck,
        epochs=p.epochs,
        batch_size=p.batch_size,
        learning_rate=p.learning_rate,
        loss=p.loss,
        seed=cfg.seed,
        noise_factor=p.noise_factor,
        callbacks=tracking.callbacks("pretrain/"),
    )
    models.save(encoder, out / cfg.paths.encoder)
    models.save(autoencoder, out / cfg.paths.autoencoder)
    data.save_history(history, out / cfg.paths.pretrain_history)
    tracking.log_artifact(out / cfg.paths.pretrain_history)
    tracking.log_model(encoder, "encoder", arrays["x_val"])
    tracking.log_model(autoencoder, "autoencoder", arrays["x_val"])
    log.info("autoencoder val loss %.5f after %d epochs", history["val_loss"][-1], p.epochs)
    return autoencoder, encoder


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        validate(cfg)
        from src import data, tracking

        arrays = data.load(cfg.paths.prepared)
        tags = {"stage": "pretrain", "data_hash": file_md5(cfg.paths.prepared)}
        with tracking.start_run(cfg, "pretrain", select_params(cfg, PARAMS), tags):
            run(cfg, arrays, Path("."))


if __name__ == "__main__":
    main()
