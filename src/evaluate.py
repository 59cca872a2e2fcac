"""Stage 4: test accuracy and loss, reconstruction error, confusion matrix, training curves."""

import json
import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from src.config import atomic_path, file_md5, select_params, user_errors, validate

log = logging.getLogger(__name__)

PARAMS = ["bottleneck", "dropout"]


def evaluate(classifier, autoencoder, x_test: np.ndarray, y_test: np.ndarray) -> tuple:
    """Return (metrics, predicted labels) on the test set."""
    test_loss, test_accuracy = classifier.evaluate(x_test, y_test, verbose=0)
    y_pred = classifier.predict(x_test, verbose=0).argmax(axis=1)
    reconstruction_mse = float(np.mean((autoencoder.predict(x_test, verbose=0) - x_test) ** 2))
    metrics = {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "test_reconstruction_mse": reconstruction_mse,
    }
    return metrics, y_pred


def run(cfg: DictConfig, arrays: dict[str, np.ndarray], out: Path) -> dict[str, float]:
    """Evaluate the models under `out`; write metrics, predictions and figures there."""
    from src import data, models, plots, tracking

    p = cfg.paths
    classifier = models.load(out / p.classifier)
    autoencoder = models.load(out / p.autoencoder)
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    metrics, y_pred = evaluate(classifier, autoencoder, x_test, y_test)
    class_names = [str(c) for c in arrays["class_names"]]

    with atomic_path(out / p.predictions) as tmp:
        rows = [f"{class_names[a]},{class_names[b]}" for a, b in zip(y_test, y_pred, strict=True)]
        tmp.write_text("\n".join(["actual,predicted", *rows]) + "\n")
    figures = out / p.figures
    plots.history(
        data.load_history(out / p.pretrain_history),
        data.load_history(out / p.classify_history),
        figures / "history.png",
    )
    plots.confusion(y_test, y_pred, class_names, figures / "confusion_matrix.png")
    with atomic_path(out / p.metrics) as tmp:
        summary = {**metrics, "bottleneck": cfg.bottleneck, "dropout": cfg.dropout}
        tmp.write_text(json.dumps(summary, indent=2) + "\n")

    tracking.log_metrics(metrics)
    for path in (out / p.metrics, out / p.predictions, *sorted(figures.glob("*.png"))):
        tracking.log_artifact(path, "evaluation")
    log.info("test accuracy %.4f, test loss %.4f", metrics["test_accuracy"], metrics["test_loss"])
    return metrics


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        validate(cfg)
        from src import data, tracking

        arrays = data.load(cfg.paths.prepared)
        tags = {"stage": "evaluate", "data_hash": file_md5(cfg.paths.prepared)}
        with tracking.start_run(cfg, "evaluate", select_params(cfg, PARAMS), tags):
            run(cfg, arrays, Path("."))


if __name__ == "__main__":
    main()
