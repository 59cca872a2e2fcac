"""Figures, drawn with matplotlib's object API (no pyplot, no display needed)."""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from src.config import atomic_path


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")


def history(pretrain: dict[str, list], classify: dict[str, list], path: str | Path) -> None:
    """Training curves: autoencoder loss, classifier accuracy and loss, train vs validation."""
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    panels = [
        (pretrain, "loss", "Autoencoder reconstruction loss", "loss"),
        (classify, "accuracy", "Classifier accuracy", "accuracy"),
        (classify, "loss", "Classifier loss", "cross-entropy loss"),
    ]
    for ax, (hist, key, title, ylabel) in zip(axes, panels, strict=True):
        epochs = np.arange(1, len(hist[key]) + 1)
        ax.plot(epochs, hist[key], label="train")
        ax.plot(epochs, hist[f"val_{key}"], label="validation")
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.legend()
    _save(fig, path)


def confusion(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], path: str | Path
) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=range(len(class_names)),
        display_labels=class_names,
        ax=ax,
        colorbar=False,
    )
    ax.set_title(f"Confusion matrix on the test set (accuracy {np.mean(y_true == y_pred):.3f})")
    _save(fig, path)
