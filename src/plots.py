"""Figures, drawn with matplotlib's object API (no pyplot, no display needed)."""

from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from src.files import atomic_path


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


def per_class_accuracy(
    accuracies: dict[str, list[float]], class_names: list[str], path: str | Path
) -> None:
    """Grouped bars: test accuracy of each class, one bar per model."""
    fig = Figure(figsize=(max(8, 0.9 * len(class_names)), 4))
    ax = fig.subplots()
    x = np.arange(len(class_names))
    width = 0.8 / len(accuracies)
    for i, (model, acc) in enumerate(accuracies.items()):
        ax.bar(x + (i - (len(accuracies) - 1) / 2) * width, acc, width, label=model)
    low = min(min(acc) for acc in accuracies.values())
    ax.set(
        title="Test accuracy per class",
        xlabel="class",
        ylabel="accuracy (fraction of the class's test images)",
        xticks=x,
        xticklabels=class_names,
        ylim=(max(0.0, low - 0.1), 1.0),
    )
    ax.legend(title="model (test accuracy)", loc="upper left", bbox_to_anchor=(1, 1))
    _save(fig, path)


def tsne(
    maps: dict[str, np.ndarray], y: np.ndarray, class_names: list[str], path: str | Path
) -> None:
    """2-D t-SNE maps side by side, points coloured by class, class names at class medians."""
    fig = Figure(figsize=(6.5 * len(maps), 6))
    axes = np.atleast_1d(fig.subplots(1, len(maps)))
    colors = [matplotlib.colormaps["tab10"](i % 10) for i in range(len(class_names))]
    for ax, (title, points) in zip(axes, maps.items(), strict=True):
        for c, name in enumerate(class_names):
            pts = points[y == c]
            if len(pts):
                ax.scatter(pts[:, 0], pts[:, 1], s=8, color=colors[c], label=name, alpha=0.7)
                mx, my = np.median(pts, axis=0)
                ax.text(mx, my, name, fontsize=13, weight="bold", ha="center", va="center")
        ax.set(title=title, xlabel="t-SNE 1", ylabel="t-SNE 2")
    axes[-1].legend(title="class", loc="center left", bbox_to_anchor=(1, 0.5), markerscale=2)
    _save(fig, path)


def examples(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of n samples, classes in turn: the first of each class, then the second, ..."""
    rank = np.zeros(len(y), dtype=int)
    for c in np.unique(y):
        rank[y == c] = np.arange(np.sum(y == c))
    return np.lexsort((y, rank))[:n]


def reconstructions(
    images: np.ndarray,
    reconstructed: dict[str, np.ndarray],
    labels: list[str],
    path: str | Path,
    noisy: np.ndarray | None = None,
) -> None:
    """Test images (top row), optionally the noisy inputs, then one row per reconstruction: one
    image of tiles with white gaps (one axes, not one per tile: 5x faster to draw)."""
    rows = {"test image": images}
    if noisy is not None:
        rows["noisy input"] = noisy
    rows.update(reconstructed)
    n, (h, w), gray = len(images), images.shape[1:3], images.shape[-1] == 1
    blank = 0.0 if gray else 1.0  # white: gray_r shows 0 as white, RGB shows 1 as white
    tile = [(0, 2), (0, 2), (0, 0)]  # 2 pixels of gap right of and below each image
    grid = np.concatenate([
        np.concatenate([np.pad(np.clip(img.reshape(images.shape[1:]), 0, 1), tile,
                               constant_values=blank) for img in row], axis=1)
        for row in rows.values()
    ])  # fmt: skip
    fig = Figure(figsize=(1.1 * n + 1.5, 1.2 * len(rows) + 0.6))
    ax = fig.subplots()
    ax.imshow(grid[..., 0] if gray else grid, cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks((w + 2) * np.arange(n) + (w - 1) / 2, [f"class {c}" for c in labels], fontsize=9)
    ax.set_yticks((h + 2) * np.arange(len(rows)) + (h - 1) / 2, list(rows), fontsize=10)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    fig.suptitle("Test images and their reconstructions")
    _save(fig, path)


def _grid(points: list[dict]) -> tuple[list, list, np.ndarray, np.ndarray]:
    """Mean test accuracy and its 95 % interval's half-width (NaN for one seed) per point
    (src.sweeps.summary.summarize), on a dropout x bottleneck grid."""
    bottlenecks = sorted({p["bottleneck"] for p in points})
    dropouts = sorted({p["dropout"] for p in points})
    mean = np.full((len(dropouts), len(bottlenecks)), np.nan)
    half = np.full_like(mean, np.nan)
    for p in points:
        i, j = dropouts.index(p["dropout"]), bottlenecks.index(p["bottleneck"])
        mean[i, j] = p["test_accuracy_mean"]
        half[i, j] = p["test_accuracy_ci_high"] - p["test_accuracy_mean"]
    return bottlenecks, dropouts, mean, half


def _seeds(points: list[dict]) -> str:
    n = sorted({p["n"] for p in points})
    if n == [1]:
        return "one seed: no interval"
    return f"mean ± 95 % CI over {'/'.join(map(str, n))} seeds"


def sweep_heatmap(points: list[dict], path: str | Path) -> None:
    """Test accuracy over bottleneck x dropout (mean ± 95 % CI over seeds); the best point,
    chosen on mean validation accuracy (points[0]), outlined."""
    from matplotlib.patches import Rectangle

    bottlenecks, dropouts, mean, half = _grid(points)
    fig = Figure(figsize=(1.6 * len(bottlenecks) + 2.5, 0.9 * len(dropouts) + 2))
    ax = fig.subplots()
    image = ax.imshow(mean, cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label="test accuracy")
    for i in range(len(dropouts)):
        for j in range(len(bottlenecks)):
            if np.isfinite(mean[i, j]):
                text = f"{mean[i, j]:.3f}" + (
                    f"\n± {half[i, j]:.3f}" if np.isfinite(half[i, j]) else ""
                )
                r, g, b, _ = image.cmap(image.norm(mean[i, j]))  # dark text on light cells
                colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
    best = points[0]
    i, j = dropouts.index(best["dropout"]), bottlenecks.index(best["bottleneck"])
    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(len(bottlenecks)), [str(b) for b in bottlenecks])
    ax.set_yticks(range(len(dropouts)), [str(d) for d in dropouts])
    title = f"Test accuracy ({_seeds(points)})\nred: best mean validation accuracy"
    ax.set(xlabel="bottleneck units", ylabel="dropout", title=title)
    _save(fig, path)


def sweep_lines(points: list[dict], path: str | Path) -> None:
    """Test accuracy against bottleneck size, one line per dropout rate (95 % CI bars)."""
    bottlenecks, dropouts, mean, half = _grid(points)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for i, d in enumerate(dropouts):
        ax.errorbar(bottlenecks, mean[i], yerr=np.nan_to_num(half[i]), marker="o", capsize=3,
                    label=f"{d}")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(bottlenecks, [str(b) for b in bottlenecks])
    ax.set(
        xlabel="bottleneck units",
        ylabel="test accuracy",
        title=f"Test accuracy against bottleneck size ({_seeds(points)})",
    )
    ax.legend(title="dropout")
    _save(fig, path)


def label_budget(budget: list[dict], path: str | Path) -> None:
    """Test accuracy against labels per class (log axis; "all" at the training images per
    class), one line per method (src.sweeps.summary.label_budget) with 95 % CI bars, drawn slightly
    apart so that the bars do not hide each other."""
    lines: dict[tuple, list[dict]] = defaultdict(list)
    for b in budget:
        lines[(b["setting"], b["method"])].append(b)
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for i, ((setting, method), rows) in enumerate(lines.items()):
        rows = sorted(rows, key=lambda b: b["x"])
        x = np.array([b["x"] for b in rows]) * 1.05 ** (i - (len(lines) - 1) / 2)
        mean = np.array([b["test_accuracy_mean"] for b in rows])
        low = np.array([b["test_accuracy_ci_low"] for b in rows])
        high = np.array([b["test_accuracy_ci_high"] for b in rows])
        ax.errorbar(x, mean, yerr=np.nan_to_num([mean - low, high - mean]), marker="o",
                    capsize=3, label=f"{method} ({setting})" if setting else method)  # fmt: skip
    ticks = sorted({(b["x"], str(b["labels_per_class"])) for b in budget})
    ax.set_xscale("log")
    ax.set_xticks([t[0] for t in ticks],
                  [f"all\n({t[0]:.0f})" if t[1] == "all" else t[1] for t in ticks])  # fmt: skip
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(
        xlabel="labelled training images per class",
        ylabel="test accuracy",
        title=f"Test accuracy against the label budget ({_seeds(budget)})",
    )
    ax.grid(alpha=0.3)
    ax.legend(title="method", loc="lower right")
    _save(fig, path)
