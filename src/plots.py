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


def _grid(rows: list[dict]) -> tuple[list, list, np.ndarray, np.ndarray]:
    """Mean and std of test accuracy over seeds, on a dropout x bottleneck grid."""
    bottlenecks = sorted({r["bottleneck"] for r in rows})
    dropouts = sorted({r["dropout"] for r in rows})
    mean = np.full((len(dropouts), len(bottlenecks)), np.nan)
    std = np.full_like(mean, np.nan)
    for i, d in enumerate(dropouts):
        for j, b in enumerate(bottlenecks):
            acc = [r["test_accuracy"] for r in rows if r["bottleneck"] == b and r["dropout"] == d]
            if acc:
                mean[i, j], std[i, j] = np.mean(acc), np.std(acc)
    return bottlenecks, dropouts, mean, std


def sweep_heatmap(rows: list[dict], path: str | Path) -> None:
    """Test accuracy over bottleneck x dropout (mean ± std over seeds when seeds repeat)."""
    bottlenecks, dropouts, mean, std = _grid(rows)
    n_seeds = len({r["seed"] for r in rows})
    fig = Figure(figsize=(1.6 * len(bottlenecks) + 2.5, 0.9 * len(dropouts) + 2))
    ax = fig.subplots()
    image = ax.imshow(mean, cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label="test accuracy")
    for i in range(len(dropouts)):
        for j in range(len(bottlenecks)):
            if np.isfinite(mean[i, j]):
                text = f"{mean[i, j]:.3f}" + (f"\n± {std[i, j]:.3f}" if n_seeds > 1 else "")
                ax.text(j, i, text, ha="center", va="center", color="white", fontsize=9)
    ax.set_xticks(range(len(bottlenecks)), [str(b) for b in bottlenecks])
    ax.set_yticks(range(len(dropouts)), [str(d) for d in dropouts])
    seeds = f" (mean ± std over {n_seeds} seeds)" if n_seeds > 1 else ""
    ax.set(xlabel="bottleneck units", ylabel="dropout", title=f"Test accuracy{seeds}")
    _save(fig, path)


def sweep_lines(rows: list[dict], path: str | Path) -> None:
    """Test accuracy against bottleneck size, one line per dropout rate."""
    bottlenecks, dropouts, mean, std = _grid(rows)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for i, d in enumerate(dropouts):
        ax.errorbar(bottlenecks, mean[i], yerr=std[i], marker="o", capsize=3, label=f"{d}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(bottlenecks, [str(b) for b in bottlenecks])
    ax.set(
        xlabel="bottleneck units",
        ylabel="test accuracy",
        title="Test accuracy against bottleneck size",
    )
    ax.legend(title="dropout")
    _save(fig, path)
