"""Stage 3: the pretrained encoder (frozen, fine-tuned or trained) + a dense head + softmax."""

import logging
import sys
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from src.config import UserError, file_md5, select_params, user_errors, validate

log = logging.getLogger(__name__)

PARAMS = ["bottleneck", "dropout", "seed", "classify"]


def fit_classifier(
    encoder,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    n_classes: int,
    head_units: int,
    dropout: float,
    freeze_encoder: bool,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    finetune_epochs: int = 0,
    finetune_learning_rate: float = 1e-4,
    callbacks: list | None = None,
) -> tuple:
    """Return (classifier, history) trained on the labels; with finetune_epochs > 0, then
    unfreeze the encoder and train on at finetune_learning_rate (Keras' transfer learning)."""
    import keras

    from src import models

    keras.utils.set_random_seed(seed)
    classifier = models.build_classifier(encoder, n_classes, head_units, dropout, freeze_encoder)
    history: dict[str, list[float]] = {}

    def train(lr: float, first_epoch: int, last_epoch: int, key: str) -> None:
        classifier.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        h = classifier.fit(
            x_train,
            y_train,
            validation_data=(x_val, y_val),
            initial_epoch=first_epoch,
            epochs=last_epoch,
            batch_size=batch_size,
            shuffle=True,
            verbose=1 if sys.stdout.isatty() else 2,
            callbacks=[keras.callbacks.TerminateOnNaN(), *(callbacks or [])],
        ).history
        if not np.isfinite(h["loss"][-1]):
            raise UserError(f"classify loss became NaN or infinite: lower {key}")
        for k, v in h.items():
            history.setdefault(k, []).extend(v)

    train(learning_rate, 0, epochs, "classify.learning_rate")
    if finetune_epochs:  # unfreeze, recompile (in train) so that it takes effect, low rate
        encoder.trainable = True
        end = epochs + finetune_epochs
        train(finetune_learning_rate, epochs, end, "classify.finetune_learning_rate")
    return classifier, history


def run(cfg: DictConfig, arrays: dict[str, np.ndarray], out: Path):
    """Load the encoder from `out`, train the classifier, write it and its history under `out`."""
    from src import data, models, tracking

    encoder = models.load(out / cfg.paths.encoder)
    if encoder.output_shape[-1] != cfg.bottleneck:
        raise UserError(
            f"encoder {out / cfg.paths.encoder} has {encoder.output_shape[-1]} "
            f"outputs but bottleneck={cfg.bottleneck}: rerun pretrain"
        )
    c = cfg.classify
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    if c.labels_per_class is not None:  # few labels; the autoencoder saw all training images
        keep = data.labelled_subset(y_train, c.labels_per_class, cfg.seed)
        log.info("training the classifier on %d of %d labelled images", len(keep), len(y_train))
        x_train, y_train = x_train[keep], y_train[keep]
    classifier, history = fit_classifier(
        encoder,
        x_train,
        y_train,
        arrays["x_val"],
        arrays["y_val"],
        n_classes=len(arrays["class_names"]),
        head_units=c.head_units,
        dropout=cfg.dropout,
        freeze_encoder=c.freeze_encoder,
        epochs=c.epochs,
        batch_size=c.batch_size,
        learning_rate=c.learning_rate,
        seed=cfg.seed,
        finetune_epochs=c.finetune_epochs if c.finetune else 0,
        finetune_learning_rate=c.finetune_learning_rate,
        callbacks=tracking.callbacks("classify/"),
    )
    models.save(classifier, out / cfg.paths.classifier)
    data.save_history(history, out / cfg.paths.classify_history)
    tracking.log_artifact(out / cfg.paths.classify_history)
    tracking.log_model(classifier, "classifier", arrays["x_val"])
    log.info("classifier val accuracy %.4f", history["val_accuracy"][-1])
    return classifier


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        validate(cfg)
        from src import data, tracking

        arrays = data.load(cfg.paths.prepared)
        tags = {"stage": "classify", "data_hash": file_md5(cfg.paths.prepared)}
        with tracking.start_run(cfg, "classify", select_params(cfg, PARAMS), tags):
            run(cfg, arrays, Path("."))


if __name__ == "__main__":
    main()
