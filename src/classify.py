"""Stage 3: the pretrained encoder (frozen, fine-tuned or trained) + a dense head + softmax; and
the same head on PCA codes, as a baseline."""

import json
import logging
import sys
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from src.config import UserError, atomic_path, file_md5, select_params, user_errors, validate

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


def head_settings(cfg: DictConfig, n_classes: int) -> dict:
    """fit_classifier's settings from the config, shared by the classifier and the PCA baseline."""
    c = cfg.classify
    return {
        "n_classes": n_classes,
        "head_units": c.head_units,
        "dropout": cfg.dropout,
        "freeze_encoder": c.freeze_encoder,
        "epochs": c.epochs,
        "batch_size": c.batch_size,
        "learning_rate": c.learning_rate,
        "seed": cfg.seed,
        "finetune_epochs": c.finetune_epochs if c.finetune else 0,
        "finetune_learning_rate": c.finetune_learning_rate,
    }


def preprocessing_record(arrays: dict[str, np.ndarray]) -> dict:
    """How training images were prepared: the record src.predict applies to new images."""
    return {
        "pixel_range": [float(v) for v in arrays["pixel_range"]],
        "image_shape": [int(d) for d in arrays["x_train"].shape[1:]],
        "class_names": [str(c) for c in arrays["class_names"]],
    }


def labelled(cfg: DictConfig, y_train: np.ndarray) -> np.ndarray | None:
    """Indices of the training labels the classifiers may use (classify.labels_per_class)."""
    from src import data

    n = cfg.classify.labels_per_class
    return None if n is None else data.labelled_subset(y_train, n, cfg.seed)


def flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def fit_pca(x_train: np.ndarray, n_components: int):
    """PCA of the training images (full SVD: exact and deterministic, so evaluate can refit it)."""
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    # One BLAS thread: on a busy 2-core machine two spinning threads took 1.4 s, one 0.01 s.
    with threadpool_limits(1):
        return PCA(n_components, svd_solver="full").fit(flat(x_train))


def fit_pca_classifier(
    arrays: dict[str, np.ndarray],
    n_components: int,
    settings: dict,
    keep: np.ndarray | None = None,
):
    """The PCA baseline: PCA codes through the same head, trained the same way (`settings`).

    The PCA projection is a Keras encoder, frozen or fine-tuned just as the autoencoder's; like
    the autoencoder it sees all training images, while the head sees the labels in `keep`.
    """
    from src import models

    x_train, y_train = arrays["x_train"], arrays["y_train"]
    pca = fit_pca(x_train, n_components)
    w = pca.components_.T
    encoder = models.build_linear_encoder(x_train.shape[1:], w, -pca.mean_ @ w, "pca_encoder")
    if keep is not None:
        x_train, y_train = x_train[keep], y_train[keep]
    classifier, _ = fit_classifier(
        encoder, x_train, y_train, arrays["x_val"], arrays["y_val"], **settings
    )
    return classifier


def run(cfg: DictConfig, arrays: dict[str, np.ndarray], out: Path):
    """Load the encoder from `out`, train the classifier, write it and its history under `out`."""
    from src import data, models, tracking

    encoder = models.load(out / cfg.paths.encoder)
    if encoder.output_shape[-1] != cfg.bottleneck:
        raise UserError(
            f"encoder {out / cfg.paths.encoder} has {encoder.output_shape[-1]} "
            f"outputs but bottleneck={cfg.bottleneck}: rerun pretrain"
        )
    settings = head_settings(cfg, len(arrays["class_names"]))
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    keep = labelled(cfg, y_train)
    if keep is not None:  # few labels; the autoencoder saw all training images
        log.info("training the classifier on %d of %d labelled images", len(keep), len(y_train))
        x_train, y_train = x_train[keep], y_train[keep]
    classifier, history = fit_classifier(
        encoder,
        x_train,
        y_train,
        arrays["x_val"],
        arrays["y_val"],
        **settings,
        callbacks=tracking.callbacks("classify/"),
    )
    models.save(classifier, out / cfg.paths.classifier)
    record = preprocessing_record(arrays)  # what src.predict needs to feed the model new images
    with atomic_path(out / cfg.paths.preprocessing) as tmp:  # = predict.preprocessing_path
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    data.save_history(history, out / cfg.paths.classify_history)
    tracking.log_artifact(out / cfg.paths.classify_history)
    tracking.log_model(classifier, "classifier", arrays["x_val"], {"preprocessing": record})
    log.info("classifier val accuracy %.4f", history["val_accuracy"][-1])
    log.info("training the PCA baseline: %d components, same head", cfg.bottleneck)
    baseline = fit_pca_classifier(arrays, cfg.bottleneck, settings, keep)
    models.save(baseline, out / cfg.paths.pca_classifier)
    _, val_accuracy = baseline.evaluate(arrays["x_val"], arrays["y_val"], verbose=0)
    tracking.log_metrics({"pca_val_accuracy": val_accuracy})
    log.info("PCA baseline val accuracy %.4f", val_accuracy)
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
