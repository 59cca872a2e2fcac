"""Stage 3: the pretrained encoder (frozen, fine-tuned or trained) + a dense head + softmax; and
the same head on PCA codes, as a baseline."""

import json
import logging
import sys
from collections.abc import Callable, Mapping
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
    augment: Mapping[str, float] | None = None,
    callbacks: list | None = None,
) -> tuple:
    """Return (classifier, history) trained on the labels; with finetune_epochs > 0, then
    unfreeze the encoder and train on from finetune_learning_rate, decayed to 0 by a cosine
    (Keras' transfer learning; the decay leaves a settled final model)."""
    import keras

    from src import models, tracking

    keras.utils.set_random_seed(seed)
    classifier = models.build_classifier(
        encoder, n_classes, head_units, dropout, freeze_encoder, augment
    )
    history: dict[str, list[float]] = {}

    def train(lr, first_epoch: int, last_epoch: int, key: str) -> None:
        classifier.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        with tracking.stop_on_signal(classifier):
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
        steps = -(-len(x_train) // batch_size) * finetune_epochs
        decay = keras.optimizers.schedules.CosineDecay(finetune_learning_rate, steps)  # to 0
        train(decay, epochs, epochs + finetune_epochs, "classify.finetune_learning_rate")
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
        "augment": dict(c.augment),
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


def spread_labels(
    codes: np.ndarray, y: np.ndarray, keep: np.ndarray, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Label the other training images from the few in `keep` by label spreading over the k-NN
    graph of their codes (scikit-learn's LabelSpreading). Returns (indices, labels) of the
    images the labels reached; the known labels stay as they are."""
    from sklearn.semi_supervised import LabelSpreading

    partial = np.full(len(y), -1)
    partial[keep] = y[keep]
    # alpha 0.8: each image keeps 20 % of its initial label; tuned on the validation split
    k = min(n_neighbors, len(codes) - 1)  # tiny datasets
    spreading = LabelSpreading(kernel="knn", n_neighbors=k, alpha=0.8, max_iter=1000)
    spreading.fit(codes.reshape(len(codes), -1), partial)
    labels = spreading.transduction_.astype(y.dtype)
    labels[keep] = y[keep]
    reached = spreading.label_distributions_.sum(axis=1) > 0
    reached[keep] = True
    log.info(
        "label spreading: %d known labels reached %d of %d training images",
        len(keep),
        reached.sum(),
        len(y),
    )
    return np.flatnonzero(reached), labels[reached]


def training_labels(
    cfg: DictConfig, encode: Callable, x_train: np.ndarray, y_train: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels a classifier head trains on: all labels, the few of
    classify.labels_per_class, or those spread from them over the codes `encode(x_train)`."""
    keep = labelled(cfg, y_train)
    if keep is None:
        return x_train, y_train
    c = cfg.classify
    if not c.label_spreading:
        return x_train[keep], y_train[keep]
    index, labels = spread_labels(encode(x_train), y_train, keep, c.spreading_neighbors)
    return (x_train if len(index) == len(x_train) else x_train[index]), labels  # no copy if all


def flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def fit_pca(x_train: np.ndarray, n_components: int):
    """PCA of the training images: exact and deterministic (evaluate refits it), from the
    eigenvectors of the pixel covariance: on MNIST 0.5 s and +26 MB, where a full SVD of the
    54000 x 784 images took +495 MB."""
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    # One BLAS thread: on a busy 2-core machine two spinning threads took 1.4 s, one 0.01 s.
    with threadpool_limits(1):
        return PCA(n_components, svd_solver="covariance_eigh").fit(flat(x_train))


def fit_pca_classifier(cfg: DictConfig, arrays: dict[str, np.ndarray], settings: dict):
    """The PCA baseline: PCA codes through the same head, trained the same way (`settings`).

    The PCA projection is a Keras encoder, frozen or fine-tuned just as the autoencoder's; like
    the autoencoder it sees all training images, while the head sees the same labels (few, or
    spread over the PCA codes).
    """
    from src import models

    x_train, y_train = arrays["x_train"], arrays["y_train"]
    pca = fit_pca(x_train, cfg.bottleneck)
    w = pca.components_.T
    encoder = models.build_linear_encoder(x_train.shape[1:], w, -pca.mean_ @ w, "pca_encoder")
    x_train, y_train = training_labels(cfg, lambda x: pca.transform(flat(x)), x_train, y_train)
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
    n_train = len(arrays["y_train"])
    x_train, y_train = training_labels(  # few labels; the autoencoder saw all training images
        cfg,
        lambda x: encoder.predict(x, batch_size=1024, verbose=0),
        arrays["x_train"],
        arrays["y_train"],
    )
    if len(y_train) < n_train:
        log.info("training the classifier on %d of %d training images", len(y_train), n_train)
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
    baseline = fit_pca_classifier(cfg, arrays, settings)
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
