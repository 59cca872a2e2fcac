"""Stage 2: train the (denoising) autoencoder on reconstruction; save encoder and autoencoder."""

import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from src import cli
from src.runtime import UserError

log = logging.getLogger(__name__)

# the keys it reads (classify.labels_per_class: model=ladder trains on them); dvc.yaml lists them
PARAMS = ["model", "bottleneck", "seed", "pretrain", "classify.labels_per_class"]


def run(cfg: DictConfig, arrays: dict[str, np.ndarray], out: Path = Path(".")) -> None:
    """Train, then write encoder, autoencoder and history under `out` together; log them."""
    from src import data, files, models, tracking, training

    n_inputs = int(np.prod(arrays["x_train"].shape[1:]))
    if cfg.bottleneck > n_inputs:
        raise UserError(
            f"bottleneck={cfg.bottleneck} is larger than the {n_inputs} input "
            "pixels: an autoencoder must compress"
        )
    p, t = cfg.paths, cfg.pretrain
    with files.outputs(out, [p.encoder, p.autoencoder, p.pretrain_history]) as staged:
        if cfg.model.name == "ladder":  # trained with the labels too (docs/ladder.md)
            from src import ladder

            fitted = ladder.pretrain(cfg, arrays, tracking.callbacks("pretrain/"))
        else:
            fitted = training.fit_autoencoder(
                arrays["x_train"], arrays["x_val"], model=cfg.model, bottleneck=cfg.bottleneck,
                epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate,
                loss=t.loss, seed=cfg.seed, noise_factor=t.noise_factor, patience=t.patience,
                callbacks=tracking.callbacks("pretrain/"),
            )  # fmt: skip
        autoencoder, encoder, history = fitted
        models.save(encoder, staged(p.encoder))
        models.save(autoencoder, staged(p.autoencoder))
        data.save_history(history, staged(p.pretrain_history))
        tracking.log_artifact(staged(p.pretrain_history))
        tracking.log_model(encoder, "encoder", arrays["x_val"])
        tracking.log_model(autoencoder, "autoencoder", arrays["x_val"])
    best = min(history["val_loss"])
    log.info("autoencoder val loss %.5f (best of %d epochs)", best, len(history["val_loss"]))


@cli.checked_choices
@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    cli.run_stage(cfg, "pretrain", PARAMS, run)


if __name__ == "__main__":
    main()
