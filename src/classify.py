"""Stage 3: the pretrained encoder (frozen, fine-tuned or trained) + a dense head + softmax; and
the same head on PCA codes, as a baseline (the PCA is saved for evaluate)."""

import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from src import cli
from src.cache import NO_CACHE, Cache
from src.files import Outputs
from src.runtime import UserError

log = logging.getLogger(__name__)

PARAMS = ["model", "bottleneck", "dropout", "seed", "classify"]


def head_settings(cfg: DictConfig, n_classes: int) -> dict[str, Any]:
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
        "patience": c.patience,
        "seed": cfg.seed,
        "finetune_epochs": c.finetune_epochs if c.finetune else 0,
        "finetune_learning_rate": c.finetune_learning_rate,
        "augment": dict(c.augment),
    }


def label_settings(cfg: DictConfig) -> dict[str, Any]:
    """training_labels' settings: which training labels the heads may use; and the rounds of
    self-training after the first training (training.fit_on_labels)."""
    c = cfg.classify
    return {
        "labels_per_class": c.labels_per_class,
        "label_spreading": c.label_spreading,
        "spreading_neighbors": c.spreading_neighbors,
        "seed": cfg.seed,
        "self_training_rounds": c.self_training_rounds,
        "self_training_source": c.self_training_source,
        "self_training_confidence": c.self_training_confidence,
        "self_training_epochs": c.self_training_epochs,
    }


def scratch_classifier(
    cfg: DictConfig, arrays: dict[str, np.ndarray], labels: dict, settings: dict, cache: Cache
) -> Any:
    """The from-scratch baseline (baselines.fit_scratch_classifier). It does not depend on the
    autoencoder, so src.train caches its weights and rebuilds it around them."""
    from omegaconf import OmegaConf

    from src import baselines, models

    def fit() -> dict[str, np.ndarray]:
        model = baselines.fit_scratch_classifier(
            cfg.model, cfg.bottleneck, arrays, labels, settings
        )
        return {f"w{i:03d}": w for i, w in enumerate(model.get_weights())}

    inputs = {"model": OmegaConf.to_container(cfg.model), "bottleneck": cfg.bottleneck,
              **labels, **settings}  # fmt: skip
    weights = cache.arrays("scratch", inputs, fit)  # keyed by classify's import closure
    _, encoder = models.build(cfg.model, arrays["x_train"].shape[1:], cfg.bottleneck)
    s = settings
    model = models.build_classifier(
        encoder, s["n_classes"], s["head_units"], s["dropout"], False, s["augment"]
    )
    model.set_weights([weights[k] for k in sorted(weights)])
    return model


def preprocessing_record(arrays: dict[str, np.ndarray]) -> dict[str, list]:
    """How training images were prepared: the record src.predict applies to new images."""
    return {
        "pixel_range": [float(v) for v in arrays["pixel_range"]],
        "image_shape": [int(d) for d in arrays["x_train"].shape[1:]],
        "class_names": [str(c) for c in arrays["class_names"]],
    }


def load_encoder(cfg: DictConfig, out: Path) -> Any:
    """The pretrained encoder under `out`, checked against cfg.bottleneck."""
    from src import models

    encoder = models.load(out / cfg.paths.encoder)
    if encoder.output_shape[-1] != cfg.bottleneck:
        raise UserError(
            f"encoder {out / cfg.paths.encoder} has {encoder.output_shape[-1]} "
            f"outputs but bottleneck={cfg.bottleneck}: rerun pretrain"
        )
    return encoder


def fit_classifier(
    cfg: DictConfig, arrays: dict, out: Path, encoder: Any, cache: Cache, callbacks: list | None
) -> tuple[Any, dict[str, list[float]]]:
    """(classifier, history): the head on the encoder, trained on the labels cfg allows; the
    encoder's codes come from `cache` when the head trains on them."""
    from src import files, tracking, training

    settings, labels = head_settings(cfg, len(arrays["class_names"])), label_settings(cfg)
    if cfg.model.name == "ladder":  # trained with its labels in pretrain (docs/ladder.md)
        from src import ladder

        callbacks = [*tracking.callbacks("classify/"), *(callbacks or [])]
        return ladder.classify(encoder, arrays, labels, settings, callbacks)
    codes = None
    if training.needs_codes(labels, settings):
        codes = cache.arrays(
            "codes", {"encoder": files.file_md5(out / cfg.paths.encoder)},
            lambda: {s: training.encode(encoder, arrays[f"x_{s}"]) for s in ("train", "val")},
        )  # fmt: skip
        codes = codes["train"], codes["val"]
    callbacks = [*tracking.callbacks("classify/"), *(callbacks or [])]
    classifier, history = training.fit_on_labels(  # the autoencoder saw every image
        encoder, arrays, labels, settings, codes, callbacks
    )
    # of the weights kept (early stopping restores the best epoch's), as evaluate measures it
    log.info("classifier val accuracy %.4f", val_accuracy(classifier, arrays))
    return classifier, history


def val_accuracy(model: Any, arrays: dict) -> float:
    """`model`'s accuracy on the validation split, as it stands (not its history's last epoch)."""
    predicted = model.predict(arrays["x_val"], verbose=0).argmax(axis=1)
    return float(np.mean(predicted == arrays["y_val"]))


def fit_baselines(cfg: DictConfig, arrays: dict, cache: Cache) -> dict[str, Any]:
    """The PCA (from `cache`) with the same head, and the same network from scratch; with
    their validation accuracies."""
    from src import baselines

    settings, labels = head_settings(cfg, len(arrays["class_names"])), label_settings(cfg)
    log.debug("training the PCA baseline: %d components, same head", cfg.bottleneck)
    pca = cache.arrays(
        "pca", {"bottleneck": cfg.bottleneck},
        lambda: baselines.fit_pca(arrays["x_train"], cfg.bottleneck),
    )  # fmt: skip
    pca_classifier = baselines.fit_pca_classifier(pca, arrays, labels, settings)
    _, pca_val_accuracy = pca_classifier.evaluate(arrays["x_val"], arrays["y_val"], verbose=0)
    log.info("PCA baseline val accuracy %.4f", pca_val_accuracy)
    log.debug("training the from-scratch baseline: the same network, randomly initialised")
    scratch = scratch_classifier(cfg, arrays, labels, settings, cache)
    scratch_val_accuracy = val_accuracy(scratch, arrays)
    log.info("from-scratch baseline val accuracy %.4f", scratch_val_accuracy)
    return {"pca": pca, "pca_classifier": pca_classifier, "scratch": scratch,
            "metrics": {"pca_val_accuracy": pca_val_accuracy,
                        "scratch_val_accuracy": scratch_val_accuracy}}  # fmt: skip


def save(cfg: DictConfig, arrays: dict, staged: Outputs, fitted: dict[str, Any]) -> None:
    """Write the classifier, the baselines, the PCA, the preprocessing record and the history
    to their staged paths; log the history, the servable classifier and the baselines' val
    accuracies."""
    from src import baselines, data, files, models, serving, tracking

    p = cfg.paths
    record = preprocessing_record(arrays)  # what src.predict needs to feed it new images
    classifier = fitted["classifier"]
    models.save(classifier, staged(p.classifier))
    files.write_json(staged(p.preprocessing), record)  # = predict.preprocessing_path
    baselines.save_pca(fitted["pca"], staged(p.pca))
    models.save(fitted["pca_classifier"], staged(p.pca_classifier))
    models.save(fitted["scratch"], staged(p.scratch_classifier))
    data.save_history(fitted["history"], staged(p.classify_history))
    tracking.log_artifact(staged(p.classify_history))
    serving.log_classifier(classifier, record, arrays["x_val"])  # serves raw pixels
    tracking.log_metrics(fitted["metrics"])


def run(
    cfg: DictConfig,
    arrays: dict[str, np.ndarray],
    out: Path = Path("."),
    cache: Cache = NO_CACHE,
    callbacks: list | None = None,
) -> None:
    """Train the classifier on the encoder under `out` and the PCA and from-scratch baselines;
    write the three, the PCA, the preprocessing record and the history under `out` together.
    `cache` reuses the encoder's codes, the PCA and the from-scratch baseline from earlier runs
    (src.train); `callbacks` are added to the classifier's training (a search trial's pruning,
    src.sweeps.job)."""
    from src import files

    p = cfg.paths
    encoder = load_encoder(cfg, out)
    names = [p.classifier, p.preprocessing, p.pca, p.pca_classifier, p.scratch_classifier,
             p.classify_history]  # fmt: skip
    with files.outputs(out, names) as staged:
        classifier, history = fit_classifier(cfg, arrays, out, encoder, cache, callbacks)
        baselines = fit_baselines(cfg, arrays, cache)
        save(cfg, arrays, staged, {"classifier": classifier, "history": history, **baselines})


@cli.checked_choices
@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    cli.run_stage(cfg, "classify", PARAMS, run)


if __name__ == "__main__":
    main()
