"""The Ladder network (Rasmus et al. 2015, "Semi-Supervised Learning with Ladder Networks",
arXiv 1507.02672) in Keras 3: an MLP encoder run twice per step, clean and with Gaussian noise,
and a decoder that denoises every layer (the full Ladder) or the top one only (the Γ-model),
trained on labelled and unlabelled batches together on one cost.

Only the clean encoder leaves this module as a saved model (export_encoder: plain Keras layers,
loadable in safe mode); the training model, its noise and its decoder stay here. docs/ladder.md.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from src import data, models, training
from src.runtime import UserError, stop_on_signal

log = logging.getLogger(__name__)

EPS = 1e-5  # added to variances under the square root, as in Keras' BatchNormalization
MOMENTUM = 0.99  # moving averages of the clean pass's batch statistics, for inference
COMBINATOR_INIT = (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)  # a1..a10, the paper's code


def standardize(z: Any) -> tuple[Any, tuple[Any, Any]]:
    """z normalised by its rows' mean and variance per unit; and that mean and variance."""
    mean, var = ops.moments(z, axes=[0])
    return (z - mean) / ops.sqrt(var + EPS), (mean, var)


def normalize(z: Any, n_labelled: int) -> tuple[Any, tuple[Any, Any]]:
    """z batch-normalised without learned scale or shift, the labelled rows apart from the
    unlabelled ones (as the paper's code does); and the unlabelled rows' mean and variance."""
    labelled, _ = standardize(z[:n_labelled])
    unlabelled, stats = standardize(z[n_labelled:])
    return ops.concatenate([labelled, unlabelled], axis=0), stats


class Combinator(layers.Layer):
    """The paper's vanilla combinator g(z̃, u) (its Appendix): the noisy z̃ pulled towards a mean
    mu(u) with a weight v(u), each a sigmoid plus a linear function of u; 10 weights per unit."""

    def build(self, z_shape: tuple, u_shape: tuple) -> None:
        init = np.repeat(np.array(COMBINATOR_INIT, "float32")[:, None], z_shape[-1], axis=1)
        self.a = self.add_weight(shape=init.shape, initializer=lambda *_, **__: init, name="a")

    def call(self, z: Any, u: Any) -> Any:
        a = self.a
        mu = a[0] * ops.sigmoid(a[1] * u + a[2]) + a[3] * u + a[4]
        v = a[5] * ops.sigmoid(a[6] * u + a[7]) + a[8] * u + a[9]
        return (z - mu) * v + mu


class EncoderLevel(layers.Layer):
    """One encoder layer: W h, batch-normalised without learned scale or shift, plus noise in the
    corrupted pass, then gamma * (z + beta) (gamma learned at the top only): the pre-activation."""

    def __init__(self, units: int, top: bool, **kwargs: Any):
        super().__init__(**kwargs)
        self.units, self.top = units, top
        self.dense = layers.Dense(units, use_bias=False, name="dense")
        self.noise = keras.random.SeedGenerator()

    def build(self, shape: tuple) -> None:
        self.dense.build(shape)
        n, top = (self.units,), self.top
        self.beta = self.add_weight(shape=n, initializer="zeros", name="beta")
        self.gamma = self.add_weight(shape=n, initializer="ones", name="gamma", trainable=top)
        self.moving_mean = self.add_weight(shape=n, initializer="zeros", trainable=False)
        self.moving_var = self.add_weight(shape=n, initializer="ones", trainable=False)

    def call(self, h: Any, n_labelled: int | None, noise_std: float = 0.0) -> tuple:
        """(z, pre-activation, the unlabelled rows' batch statistics); n_labelled None:
        inference, normalised with the moving averages."""
        z, stats = self.dense(h), None
        if n_labelled is None:
            z = (z - self.moving_mean) / ops.sqrt(self.moving_var + EPS)
        else:
            z, stats = normalize(z, n_labelled)
        if noise_std:
            z = z + keras.random.normal(ops.shape(z), stddev=noise_std, seed=self.noise)
        return z, self.gamma * (z + self.beta), stats

    def track(self, stats: tuple[Any, Any]) -> None:
        """Move the moving averages towards a clean pass's batch statistics."""
        for moving, value in zip((self.moving_mean, self.moving_var), stats, strict=True):
            moving.assign(MOMENTUM * moving + (1 - MOMENTUM) * value)


class Ladder(keras.Model):
    """The training model: encoder levels, and for each denoised level (top first) a combinator
    and, below the top, the map V from the level above; train_step minimises the supervised cost
    of the corrupted pass plus the weighted denoising costs."""

    def __init__(self, sizes: Sequence[int], noise_std: float, cost_weights: Sequence[float],
                 variant: str, schedule: Mapping[str, Any], **kwargs: Any):  # fmt: skip
        super().__init__(**kwargs)
        self.sizes, self.noise_std, self.schedule = list(sizes), noise_std, dict(schedule)
        top = len(sizes) - 1
        self.levels = [EncoderLevel(n, i == top, name=f"level_{i}")
                       for i, n in enumerate(sizes[1:], 1)]  # fmt: skip
        self.denoised = list(range(top, -1, -1)) if variant == "full" else [top]
        self.cost_weights = {i: float(cost_weights[i]) for i in self.denoised}
        self.g = [Combinator(name=f"g_{i}") for i in self.denoised]
        self.v = [layers.Dense(sizes[i], use_bias=False, name=f"v_{i}") for i in self.denoised[1:]]
        self.input_noise = keras.random.SeedGenerator()
        names = ["loss", "supervised", *(f"denoising_{i}" for i in self.denoised), "accuracy"]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names[:-1]}
        self.trackers["accuracy"] = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    def encode(
        self, x: Any, n_labelled: int | None, noisy: bool, track: bool = True
    ) -> tuple[list, list, Any]:
        """(z of every level, input first; the clean pass's batch statistics; the top's scores).
        A clean training pass (n_labelled set, not noisy) moves the moving averages if `track`."""
        h = ops.reshape(x, (-1, self.sizes[0]))
        noise_std = self.noise_std if noisy else 0.0
        if noise_std:
            h = h + keras.random.normal(ops.shape(h), stddev=noise_std, seed=self.input_noise)
        zs, stats = [h], [None]
        for level in self.levels:
            z, pre, s = level(h, n_labelled=n_labelled, noise_std=noise_std)
            if s is not None and track and not noisy:
                level.track(s)
            zs, stats, h = [*zs, z], [*stats, s], pre if level.top else ops.relu(pre)
        return zs, stats, h

    def call(self, x: Any, training: bool = False) -> Any:
        return self.encode(x, None, noisy=False)[2]  # the clean scores (logits)

    def denoising_costs(self, noisy: list, clean: list, stats: list, top: Any) -> dict:
        """Per denoised level: the mean square between the decoder's estimate, normalised with
        the clean pass's batch statistics, and the clean z (unlabelled rows, already sliced)."""
        costs, z_hat = {}, None
        for k, (i, g) in enumerate(zip(self.denoised, self.g, strict=True)):
            u, _ = standardize(top if k == 0 else self.v[k - 1](z_hat))
            z_hat = g(noisy[i], u)
            mean, var = stats[i] if stats[i] is not None else (0.0, 1.0)
            estimate = (z_hat - mean) / ops.sqrt(var + EPS)
            costs[i] = ops.mean(ops.square(estimate - clean[i]))
        return costs

    def costs(self, x_l: Any, y: Any, x_u: Any, track: bool = True) -> dict[str, Any]:
        """Every cost of one step, the total as `loss`; the corrupted pass's labelled scores."""
        n = ops.shape(x_l)[0]
        x = ops.concatenate([x_l, x_u], axis=0)
        noisy, _, scores = self.encode(x, n, noisy=True)
        clean, stats, _ = self.encode(x, n, noisy=False, track=track)
        unlabelled = [z[n:] for z in noisy], [z[n:] for z in clean]
        denoising = self.denoising_costs(*unlabelled, stats, ops.softmax(scores[n:]))
        supervised = ops.mean(
            keras.losses.sparse_categorical_crossentropy(y, scores[:n], from_logits=True)
        )
        loss = supervised + sum(self.cost_weights[i] * c for i, c in denoising.items())
        named = {f"denoising_{i}": c for i, c in denoising.items()}
        return {"loss": loss, "supervised": supervised, **named, "scores": scores[:n]}

    def train_step(self, batch: tuple) -> dict[str, Any]:
        (x_l, x_u), y = batch
        with tf.GradientTape() as tape:
            costs = self.costs(x_l, y, x_u)
        weights = self.trainable_weights
        self.optimizer.apply(tape.gradient(costs["loss"], weights), weights)
        for name, tracker in self.trackers.items():
            tracker.update_state(*((y, costs["scores"]) if name == "accuracy" else (costs[name],)))
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def test_step(self, batch: tuple) -> dict[str, Any]:
        x, y = batch  # the training cost, the images as labelled and as unlabelled ones
        self.trackers["loss"].update_state(self.costs(x, y, x, track=False)["loss"])
        self.trackers["accuracy"].update_state(y, self(x))  # the clean pass's
        return {name: self.trackers[name].result() for name in ("loss", "accuracy")}


class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`rate` until step `start`, then linearly down to 0 at step `end` (the paper's annealing)."""

    def __init__(self, rate: float, start: int, end: int):
        self.rate, self.start, self.end = rate, start, end

    def __call__(self, step: Any) -> Any:
        left = (self.end - ops.cast(step, "float32")) / max(self.end - self.start, 1)
        return self.rate * ops.clip(left, 0.0, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate, "start": self.start, "end": self.end}


def build(input_shape: tuple[int, ...], bottleneck: int, hidden: Sequence[int], noise_std: float,
          denoising_weights: Sequence[float], variant: str, schedule: Mapping[str, Any]
          ) -> tuple[Ladder, keras.Model]:  # fmt: skip
    """(the training model, built; its clean encoder: export_encoder) for layer sizes
    pixels-hidden...-bottleneck; `schedule` (epochs, batch_size, learning_rate, decay_start)
    rides on the model for fit."""
    sizes = [int(np.prod(input_shape)), *hidden, bottleneck]
    if len(denoising_weights) != len(sizes):
        raise UserError(
            f"model.denoising_weights={list(denoising_weights)} is not allowed: it must have one "
            f"weight per layer, input first: {len(sizes)} for model.hidden={list(hidden)}"
        )
    ladder = Ladder(sizes, noise_std, denoising_weights, variant, schedule, name="ladder")
    x = keras.random.uniform((4, *input_shape), seed=0)  # creates every weight, eagerly
    ladder.costs(x[:2], ops.zeros((2,), "int32"), x[2:])
    for level in ladder.levels:  # as they were before that pass
        level.moving_mean.assign(ops.zeros_like(level.moving_mean))
        level.moving_var.assign(ops.ones_like(level.moving_var))
    return ladder, export_encoder(ladder, input_shape)


def export_encoder(ladder: Ladder, input_shape: tuple[int, ...]) -> keras.Model:
    """The clean encoder in plain Keras layers with the ladder's weights: per level Dense (no
    bias) and BatchNormalization on the moving averages (its beta = gamma * beta; its gamma the
    top's, none below), ReLU below the top. The code is the top's class scores, before softmax."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    for i, level in enumerate(ladder.levels, 1):
        dense = layers.Dense(level.units, use_bias=False, name=f"encoder_dense_{i}")
        name = "code" if level.top else f"encoder_norm_{i}"
        norm = layers.BatchNormalization(epsilon=EPS, scale=level.top, name=name)
        x = norm(dense(x))
        dense.set_weights(level.dense.get_weights())
        gamma, beta, mean, var = (
            ops.convert_to_numpy(w)
            for w in (level.gamma, level.beta, level.moving_mean, level.moving_var)
        )
        norm.set_weights([gamma, gamma * beta, mean, var] if level.top else [beta, mean, var])
        x = x if level.top else layers.ReLU(name=f"encoder_relu_{i}")(x)  # fmt: skip
    return keras.Model(inputs, x, name="encoder")


def joint_batches(
    x_l: np.ndarray, y_l: np.ndarray, x_u: np.ndarray, batch_size: int
) -> tf.data.Dataset:
    """((labelled images, unlabelled images), labels) per step: batch_size of the unlabelled
    images (each once an epoch) beside batch_size labelled ones, cycling through the few."""
    unlabelled = tf.data.Dataset.from_tensor_slices(x_u).shuffle(len(x_u))
    labelled = tf.data.Dataset.from_tensor_slices((x_l, y_l)).shuffle(len(x_l)).repeat()
    return (
        tf.data.Dataset.zip(
            unlabelled.batch(batch_size, drop_remainder=True),
            labelled.batch(batch_size, drop_remainder=True),
        )
        .map(lambda u, lab: ((lab[0], u), lab[1]))
        .prefetch(tf.data.AUTOTUNE)
    )


def fit(ladder: Ladder, labelled: tuple, x_u: np.ndarray, validation: tuple,
        callbacks: list | None = None) -> dict[str, list[float]]:  # fmt: skip
    """Train on the labelled pairs and the unlabelled images together with Adam, the rate
    linearly decayed to 0 from decay_start of the epochs on; return the history. val_loss is the
    same cost on the validation images, val_accuracy the clean pass's."""
    s = ladder.schedule
    batch_size = min(s["batch_size"], len(x_u))  # labelled batches repeat the few labels
    steps = len(x_u) // batch_size * s["epochs"]
    rate = LinearDecay(s["learning_rate"], int(steps * s["decay_start"]), steps)
    # XLA made a step 9 times slower on these 2 CPU cores (docs/ladder.md): off
    ladder.compile(optimizer=keras.optimizers.Adam(rate), jit_compile=False)
    with stop_on_signal(ladder):
        history = ladder.fit(
            joint_batches(*labelled, x_u, batch_size),
            validation_data=training.batches(*validation, 1000, shuffle=False),
            epochs=s["epochs"],
            shuffle=False,  # the pipeline shuffles
            verbose=0,
            callbacks=training.fit_callbacks(None, callbacks),
        ).history
    training.check_finite(history, "model.learning_rate")
    return history


def check_classes(bottleneck: int, n_classes: int) -> None:
    """UserError unless the code (the ladder's top layer, its class scores) has a unit a class."""
    if bottleneck != n_classes:
        raise UserError(
            f"bottleneck={bottleneck} is not allowed with model=ladder: its top layer scores the "
            f"classes, so bottleneck must be the number of classes, {n_classes}"
        )


def with_decoder(encoder: keras.Model, arrays: dict, pretrain: Mapping, hidden: Sequence[int],
                 seed: int) -> keras.Model:  # fmt: skip
    """encoder + a dense decoder (the mirror of `hidden`, models.build_autoencoder's) trained on
    its frozen codes to reconstruct the images, with the pretrain settings: what evaluate's
    reconstruction error and figures show of the ladder's code."""
    keras.utils.set_random_seed(seed)
    shape, n_codes = arrays["x_train"].shape[1:], encoder.output_shape[-1]
    decoder = models.build_autoencoder(shape, n_codes, list(hidden))[0].get_layer("decoder")
    codes = {s: training.encode(encoder, arrays[f"x_{s}"]) for s in ("train", "val")}
    p = pretrain
    history = training.fit(
        decoder, codes["train"], arrays["x_train"], (codes["val"], arrays["x_val"]),
        learning_rate=p["learning_rate"], rate_key="pretrain.learning_rate", loss=p["loss"],
        epochs=p["epochs"], batch_size=p["batch_size"], patience=p["patience"],
    )  # fmt: skip
    log.info("decoder of the ladder's codes: val loss %.5f", min(history["val_loss"]))
    inputs = keras.Input(shape=shape, name="image")
    return keras.Model(inputs, decoder(encoder(inputs)), name="autoencoder")


def pretrain(cfg: Any, arrays: dict, callbacks: list | None = None) -> tuple:
    """(autoencoder, encoder, history) for the pretrain stage: the ladder trained on
    classify.labels_per_class labels (and as many validation labels) and every training image;
    its clean encoder; that encoder + a decoder of its codes (with_decoder)."""
    check_classes(cfg.bottleneck, len(arrays["class_names"]))
    keras.utils.set_random_seed(cfg.seed)
    ladder, _ = models.build(cfg.model, arrays["x_train"].shape[1:], cfg.bottleneck)
    n, seed = cfg.classify.labels_per_class, cfg.seed
    labelled = data.labelled(arrays["x_train"], arrays["y_train"], n, seed)
    validation = data.labelled(arrays["x_val"], arrays["y_val"], n, seed)
    history = fit(ladder, labelled, arrays["x_train"], validation, callbacks)
    log.info("ladder val accuracy %.4f on %d validation labels",
             history["val_accuracy"][-1], len(validation[1]))  # fmt: skip
    encoder = export_encoder(ladder, arrays["x_train"].shape[1:])
    autoencoder = with_decoder(encoder, arrays, cfg.pretrain, cfg.model.hidden, cfg.seed)
    return autoencoder, encoder, history


def classifier_of(encoder: keras.Model) -> keras.Model:
    """The ladder's classifier: its clean encoder's class scores through a softmax."""
    inputs = keras.Input(shape=encoder.input_shape[1:], name="image")
    outputs = layers.Activation("softmax", name="probabilities")(encoder(inputs, training=False))
    return keras.Model(inputs, outputs, name="classifier")


def classify(
    encoder: keras.Model,
    arrays: dict,
    labels: Mapping,
    settings: Mapping,
    callbacks: list | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """(classifier, history) for the classify stage: classifier_of the encoder, trained with the
    ladder in pretrain; with finetune_epochs, fine-tuned on the labels (training.finetune). The
    history without fine-tuning is one row: its scores on those labels and on x_val."""
    classifier = classifier_of(encoder)
    s, loss = settings, training.CLASSIFY_LOSS
    training.compile_adam(classifier, s["learning_rate"], loss, ["accuracy"])
    classifier.optimizer.build(classifier.trainable_variables)  # saved as loaded: no warning
    x, y = data.labelled(arrays["x_train"], arrays["y_train"], labels["labels_per_class"],
                         labels["seed"])  # fmt: skip
    val = arrays["x_val"], arrays["y_val"]
    if s["finetune_epochs"]:
        return classifier, training.finetune(
            classifier, encoder, x, y, val, trainable=True, epochs=s["finetune_epochs"],
            learning_rate=s["finetune_learning_rate"], batch_size=s["batch_size"],
            patience=s["patience"], callbacks=callbacks,
        )  # fmt: skip
    scores = [classifier.evaluate(*xy, batch_size=1000, verbose=0) for xy in ((x, y), val)]
    names = ("loss", "accuracy", "val_loss", "val_accuracy")
    return classifier, dict(zip(names, ([v] for v in [*scores[0], *scores[1]]), strict=True))
