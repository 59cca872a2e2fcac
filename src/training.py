"""Training: the one fit helper, the autoencoder, the classifier, and the labels a head sees."""

import logging
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from src import data, models
from src.runtime import UserError, stop_on_signal

log = logging.getLogger(__name__)

STEPS_PER_EXECUTION = 16  # train steps per tf.function call: less Python per step
CLASSIFY_LOSS = "sparse_categorical_crossentropy"  # integer labels, softmax outputs


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool) -> tf.data.Dataset:
    """The arrays as one tf.data pipeline, reshuffled every epoch. Keras' own path for numpy
    input rebuilds its pipeline every epoch, which costs more than a small head's epoch
    (benchmarks/README.md, "Per-epoch cost")."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def compile_adam(
    model: keras.Model,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    loss: str,
    metrics: list[str] | None,
) -> None:
    """Compile with Adam, STEPS_PER_EXECUTION train steps per call."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss,
        metrics=metrics,
        steps_per_execution=STEPS_PER_EXECUTION,
    )


class EpochLog(keras.callbacks.Callback):
    """Each epoch's metrics as one DEBUG line of this module's logger, instead of Keras' own
    printing: shown with `hydra.verbose=src.training` (or `hydra.verbose=true`)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
        log.debug("epoch %d/%d: %s", epoch + 1, self.params.get("epochs", 0), metrics)


def fit_callbacks(patience: int | None, callbacks: list | None) -> list:
    """TerminateOnNaN, early stopping after `patience` epochs without a better val_loss (best
    weights kept; none when patience is None), the epoch log, then `callbacks`."""
    stopping = [] if patience is None else [
        keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
    ]  # fmt: skip
    return [keras.callbacks.TerminateOnNaN(), *stopping, EpochLog(), *(callbacks or [])]


def check_finite(history: dict[str, list[float]], rate_key: str) -> None:
    """UserError naming `rate_key` when the last training loss is NaN or infinite."""
    if not np.isfinite(history["loss"][-1]):
        stage = rate_key.split(".")[0]
        raise UserError(f"{stage} loss became NaN or infinite: lower {rate_key}")


def fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    validation_data: tuple[np.ndarray, np.ndarray],
    *,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    rate_key: str,
    loss: str,
    epochs: int,
    batch_size: int,
    patience: int | None = None,
    initial_epoch: int = 0,
    metrics: list[str] | None = None,
    callbacks: list | None = None,
) -> dict[str, list[float]]:
    """Compile (Adam) and fit; return the history. With `patience`, stop when val_loss has not
    improved for that many epochs and keep the best weights (epochs is then a maximum). Ctrl-C
    or SIGTERM stops after the batch and raises; a NaN or infinite loss stops training with a
    UserError naming `rate_key`."""
    compile_adam(model, learning_rate, loss, metrics)
    with stop_on_signal(model):
        history = model.fit(
            batches(x, y, batch_size, shuffle=True),
            validation_data=batches(*validation_data, batch_size, shuffle=False),
            initial_epoch=initial_epoch,
            epochs=epochs,
            shuffle=False,  # the pipeline shuffles
            verbose=0,  # epochs are logged by EpochLog, at DEBUG
            callbacks=fit_callbacks(patience, callbacks),
        ).history
    check_finite(history, rate_key)
    return history


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
    patience: int | None = None,
    callbacks: list | None = None,
) -> tuple[keras.Model, keras.Model, dict[str, list[float]]]:
    """Return (autoencoder, encoder, history) trained to reconstruct x_train (from noisy inputs
    when noise_factor > 0: a denoising autoencoder)."""
    keras.utils.set_random_seed(seed)
    autoencoder, encoder = models.build(model, x_train.shape[1:], bottleneck)
    history = fit(
        autoencoder,
        *denoising_pairs(x_train, noise_factor, seed),
        denoising_pairs(x_val, noise_factor, seed + 1),
        learning_rate=learning_rate,
        rate_key="pretrain.learning_rate",
        loss=loss,
        epochs=epochs,
        batch_size=batch_size,
        patience=patience,
        callbacks=callbacks,
    )
    return autoencoder, encoder, history


def on_codes(freeze_encoder: bool, augment: Mapping[str, float] | None) -> bool:
    """Whether a head can train on codes computed once: the encoder is frozen and no random
    augmentation changes the images (then every epoch would compute the same codes)."""
    return freeze_encoder and not any((augment or {}).values())


def needs_codes(labels: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    """Whether fit_on_labels uses the encoder's codes of x_train and x_val: to spread labels
    over them, or to train the head on them."""
    spreads = labels["label_spreading"] and labels["labels_per_class"] is not None
    return spreads or on_codes(settings["freeze_encoder"], settings["augment"])


def encode(encoder: keras.Model, x: np.ndarray) -> np.ndarray:
    return encoder.predict(x, batch_size=1024, verbose=0)


def fit_head(
    classifier: keras.Model,
    encoder: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    validation_data: tuple[np.ndarray, np.ndarray],
    *,
    use_codes: bool,
    codes: tuple[np.ndarray, np.ndarray] | None,
    learning_rate: float,
    epochs: int,
    **train: Any,
) -> dict[str, list[float]]:
    """Train `classifier` (built on `encoder`) from learning_rate; return the history. With
    `use_codes` (frozen encoder, no augmentation) only its head trains, on the codes of x_train
    and the validation images (`codes`, or computed once here), not through the encoder every
    epoch: the same training, as the codes never change. `train`: batch_size, patience,
    callbacks. The classifier is compiled either way, so that evaluate() works on it."""
    model, x, (x_val, y_val) = classifier, x_train, validation_data
    if use_codes:
        x, x_val = codes if codes is not None else (encode(encoder, x), encode(encoder, x_val))
        model = models.head_of(classifier, x.shape[1])
    history = fit(
        model, x, y_train, (x_val, y_val), learning_rate=learning_rate,
        rate_key="classify.learning_rate", loss=CLASSIFY_LOSS, metrics=["accuracy"],
        epochs=epochs, **train,
    )  # fmt: skip
    if model is not classifier:  # compiled as if trained whole
        classifier.compile(optimizer=model.optimizer, loss=CLASSIFY_LOSS, metrics=["accuracy"])
    return history


def fit_classifier(
    encoder: keras.Model,
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
    patience: int | None = None,
    codes: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: list | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """(encoder + head, history) trained on the labels (fit_head; `codes` of x_train and x_val
    if known); with finetune_epochs, then the encoder unfrozen and trained on from
    finetune_learning_rate, cosine-decayed to 0 (Keras' transfer learning: a settled model)."""
    keras.utils.set_random_seed(seed)
    classifier = models.build_classifier(
        encoder, n_classes, head_units, dropout, freeze_encoder, augment
    )
    train = {"batch_size": batch_size, "patience": patience, "callbacks": callbacks}
    history = fit_head(
        classifier, encoder, x_train, y_train, (x_val, y_val), learning_rate=learning_rate,
        epochs=epochs, use_codes=on_codes(freeze_encoder, augment), codes=codes, **train,
    )  # fmt: skip
    if finetune_epochs:  # unfreeze, after the head's epochs (fewer if early stopping ended them)
        history = finetune_more(
            history, classifier, encoder, x_train, y_train, (x_val, y_val), trainable=True,
            epochs=finetune_epochs, learning_rate=finetune_learning_rate, **train,
        )  # fmt: skip
    return classifier, history


def finetune(
    classifier: keras.Model,
    encoder: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    validation_data: tuple[np.ndarray, np.ndarray],
    *,
    trainable: bool,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    initial_epoch: int = 0,
    patience: int | None = None,
    callbacks: list | None = None,
) -> dict[str, list[float]]:
    """Train the whole classifier, its encoder too if `trainable`, for `epochs` more epochs
    after `initial_epoch`, from learning_rate cosine-decayed to 0; return the history."""
    encoder.trainable = trainable  # fit recompiles, so that it takes effect
    steps = -(-len(x) // batch_size) * epochs
    decay = keras.optimizers.schedules.CosineDecay(learning_rate, steps)  # to 0
    return fit(
        classifier, x, y, validation_data, learning_rate=decay,
        rate_key="classify.finetune_learning_rate", loss=CLASSIFY_LOSS,
        metrics=["accuracy"], initial_epoch=initial_epoch, epochs=initial_epoch + epochs,
        batch_size=batch_size, patience=patience, callbacks=callbacks,
    )  # fmt: skip


def finetune_more(
    history: dict[str, list[float]],
    classifier: keras.Model,
    encoder: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    validation_data: tuple[np.ndarray, np.ndarray],
    **settings: Any,
) -> dict[str, list[float]]:
    """finetune (`settings`: its keyword arguments) from the epoch after `history`'s last;
    return `history` with the new epochs appended."""
    more = finetune(
        classifier, encoder, x, y, validation_data, initial_epoch=len(history["loss"]), **settings
    )
    return {k: v + more[k] for k, v in history.items()}


def first_training_set(
    arrays: dict[str, np.ndarray],
    labels: dict[str, Any],
    codes: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """(images, labels, codes) the classifier first trains on: the training images whose labels
    training_labels gives (`labels`: its settings); their codes and x_val's, if known."""
    train_codes = codes[0] if codes is not None else None
    index, y = training_labels(train_codes, arrays["y_train"], **labels)
    if index is None:  # every training image
        return arrays["x_train"], y, codes
    log.info("training a head on %d of %d images", len(y), len(arrays["y_train"]))
    return arrays["x_train"][index], y, None if codes is None else (codes[0][index], codes[1])


def self_training_round(
    classifier: keras.Model,
    encoder: keras.Model,
    arrays: dict[str, np.ndarray],
    labels: dict[str, Any],
    settings: dict[str, Any],
    history: dict[str, list[float]],
    callbacks: list | None = None,
) -> dict[str, list[float]]:
    """One round of self-training after `history`: train the classifier on the known labels and
    the self_training_labels of the other training images for self_training_epochs from
    finetune_learning_rate, cosine-decayed to 0, its encoder too unless it stayed frozen
    (freeze_encoder without fine-tuning); return `history` with the round's epochs appended."""
    index, y = self_training_labels(classifier, encoder, arrays, labels)
    return finetune_more(
        history, classifier, encoder, arrays["x_train"][index], y,
        (arrays["x_val"], arrays["y_val"]),
        trainable=not settings["freeze_encoder"] or settings["finetune_epochs"] > 0,
        epochs=labels["self_training_epochs"], learning_rate=settings["finetune_learning_rate"],
        batch_size=settings["batch_size"], patience=settings["patience"], callbacks=callbacks,
    )  # fmt: skip


def fit_on_labels(
    encoder: keras.Model,
    arrays: dict[str, np.ndarray],
    labels: dict[str, Any],
    settings: dict[str, Any],
    codes: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: list | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """fit_classifier on the training labels `labels` allows (training_labels' settings): all,
    a few, or spread from those over the codes; then `self_training_rounds` rounds of
    self_training_round. `codes`: the encoder's codes of x_train and x_val when known, used for
    spreading and for a head on codes."""
    if codes is None and needs_codes(labels, settings):
        codes = encode(encoder, arrays["x_train"]), encode(encoder, arrays["x_val"])
    x_train, y, codes = first_training_set(arrays, labels, codes)
    classifier, history = fit_classifier(
        encoder, x_train, y, arrays["x_val"], arrays["y_val"], **settings, codes=codes,
        callbacks=callbacks,
    )  # fmt: skip
    for _ in range(labels.get("self_training_rounds", 0)):  # encoder trained unless frozen
        history = self_training_round(
            classifier, encoder, arrays, labels, settings, history, callbacks
        )
    return classifier, history


def pseudo_labels(
    probabilities: np.ndarray,
    classes: np.ndarray,
    keep: np.ndarray,
    known: np.ndarray,
    confidence: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) of the training images a self-training round trains on: the known
    ones (`keep`, labelled `known`, whatever was predicted) and every other image whose highest
    class probability (a row of `probabilities`, columns `classes`) is at least `confidence`,
    labelled with that class."""
    labels = classes[probabilities.argmax(axis=1)]
    confident = probabilities.max(axis=1) >= confidence
    labels[keep], confident[keep] = known, True
    log.info(
        "self-training: %d of %d training images labelled (%d known, the others with "
        "probability >= %g)",
        confident.sum(),
        len(labels),
        len(keep),
        confidence,
    )
    return np.flatnonzero(confident), labels[confident]


def self_training_labels(
    classifier: keras.Model,
    encoder: keras.Model,
    arrays: dict[str, np.ndarray],
    labels: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) for a self-training round of a classifier trained on a few labels
    (labels_per_class): pseudo_labels from its confident predictions
    (self_training_source=predictions), or from the known labels spread over its encoder's
    codes, fine-tuned or not (spreading); the known labels kept."""
    x, y_train = arrays["x_train"], arrays["y_train"]
    keep = data.labelled_subset(y_train, labels["labels_per_class"], labels["seed"])
    if labels["self_training_source"] == "spreading":
        classes, probabilities = spreading_distributions(
            encode(encoder, x), y_train, keep, labels["spreading_neighbors"]
        )
    else:
        probabilities = classifier.predict(x, batch_size=1024, verbose=0)
        classes = np.arange(probabilities.shape[1], dtype=y_train.dtype)
    return pseudo_labels(
        probabilities, classes, keep, y_train[keep], labels["self_training_confidence"]
    )


def spreading_distributions(
    codes: np.ndarray, y: np.ndarray, keep: np.ndarray, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """(classes, label distributions): label spreading of the labels in `keep` over the k-NN
    graph of the codes (scikit-learn's LabelSpreading); a row of zeros where none reached."""
    from sklearn.semi_supervised import LabelSpreading

    partial = np.full(len(y), -1)
    partial[keep] = y[keep]
    # alpha 0.8: each image keeps 20 % of its initial label; tuned on the validation split
    k = min(n_neighbors, len(codes) - 1)  # tiny datasets
    spreading = LabelSpreading(kernel="knn", n_neighbors=k, alpha=0.8, max_iter=1000)
    spreading.fit(codes.reshape(len(codes), -1), partial)
    return spreading.classes_.astype(y.dtype), spreading.label_distributions_


def spread_labels(
    codes: np.ndarray, y: np.ndarray, keep: np.ndarray, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Label the other training images from the few in `keep` by label spreading over the k-NN
    graph of their codes (spreading_distributions). Returns (indices, labels) of the images
    the labels reached; the known labels stay as they are."""
    classes, distributions = spreading_distributions(codes, y, keep, n_neighbors)
    labels = classes[distributions.argmax(axis=1)]  # LabelSpreading's transduction_
    labels[keep] = y[keep]
    reached = distributions.sum(axis=1) > 0
    reached[keep] = True
    log.info(
        "label spreading: %d known labels reached %d of %d training images",
        len(keep),
        reached.sum(),
        len(y),
    )
    return np.flatnonzero(reached), labels[reached]


def training_labels(
    codes: np.ndarray | None,
    y_train: np.ndarray,
    *,
    labels_per_class: int | float | None,
    label_spreading: bool,
    spreading_neighbors: int,
    seed: int,
    **self_training: Any,
) -> tuple[np.ndarray | None, np.ndarray]:
    """(indices of the training images a head trains on, or None for all; their labels): all
    labels, the few of labels_per_class, or those spread from them over `codes` (the codes of
    every training image, needed only for spreading). `self_training`: the self_training_*
    settings, for the rounds after the first training (fit_on_labels), not used here."""
    if labels_per_class is None:
        return None, y_train
    keep = data.labelled_subset(y_train, labels_per_class, seed)
    if not label_spreading:
        return keep, y_train[keep]
    index, labels = spread_labels(codes, y_train, keep, spreading_neighbors)
    return (None if len(index) == len(y_train) else index), labels
