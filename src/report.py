"""The evaluation's tables and report: predictions and per-class CSVs, the training recipe in
words, and a self-contained HTML page with every figure embedded."""

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from src import files

METHODS = {  # key in metrics and tables: what the figures and the report call it
    "autoencoder": "autoencoder codes + head",
    "pca": "PCA codes + same head",
    "raw": "raw pixels + logistic regression",
    "scratch": "same network from scratch",
}
FIGURES = {  # file in paths.figures: its caption in the report, in the report's order
    "per_class_accuracy.png": "Test accuracy per class",
    "tsne.png": "t-SNE maps of the codes",
    "reconstructions.png": "Reconstructions",
    "confusion_matrix.png": "Confusion matrix of the autoencoder classifier",
    "history.png": "Training curves",
}


def write_predictions(path: Path, y: np.ndarray, predicted: np.ndarray, names: list[str]) -> None:
    """actual,predicted class names per test image (DVC's confusion plot)."""
    rows = ([names[a], names[b]] for a, b in zip(y, predicted, strict=True))
    files.write_csv(path, ["actual", "predicted"], rows)


def write_per_class(path: Path, per_class: dict[str, list[float]], names: list[str]) -> None:
    """class, then one accuracy column per method."""
    rows = ([n, *(f"{acc[c]:.4f}" for acc in per_class.values())] for c, n in enumerate(names))
    files.write_csv(path, ["class", *per_class], rows)


def training_recipe(classify: Mapping[str, Any], seed: int) -> str:
    """How the classifiers were trained, in words, from the classify config."""
    c = classify
    parts = [
        f"{'at most ' if c['patience'] else ''}{c['epochs']} epochs, Adam {c['learning_rate']}, "
        f"batch {c['batch_size']}, seed {seed}",
        f"encoder {'frozen' if c['freeze_encoder'] else 'trained with the head'}",
    ]
    if c["finetune"]:
        parts.append(
            f"then fine-tuned {c['finetune_epochs']} epochs from {c['finetune_learning_rate']}, "
            "cosine-decayed"
        )
    if c["patience"]:
        parts.append(f"stopped after {c['patience']} epochs without a lower validation loss, "
                     "best weights kept")  # fmt: skip
    augment = [f"{k} {v}" for k, v in c["augment"].items() if v]
    if augment:
        parts.append(f"random {', '.join(augment)} of the training images")
    if c["labels_per_class"] is not None:
        spread = ", spread over the codes to the other training images"
        parts.append(
            f"labels_per_class={c['labels_per_class']}{spread if c['label_spreading'] else ''}"
        )
    if c.get("self_training_rounds"):
        parts.append(f"{c['self_training_rounds']} rounds of self-training on "
                     f"{c['self_training_source']} with probability >= "
                     f"{c['self_training_confidence']}")  # fmt: skip
    return "; ".join(parts)


def comparison_table(m: Mapping[str, float], bottleneck: int, k: int, n_tsne: int) -> list[list]:
    """The report's table: one row per method, then the autoencoder minus each baseline."""
    return [
        ["model", "test accuracy", "reconstruction MSE (test)",
         f"{k}-NN accuracy on the t-SNE map ({n_tsne} test images)"],
        [f"autoencoder ({bottleneck}-D code) + head", f"{m['test_accuracy']:.4f}",
         f"{m['test_reconstruction_mse']:.5f}", f"{m['latent_knn_accuracy']:.4f}"],
        [f"PCA ({bottleneck} components) + same head", f"{m['pca_test_accuracy']:.4f}",
         f"{m['pca_reconstruction_mse']:.5f}", f"{m['pca_latent_knn_accuracy']:.4f}"],
        ["raw pixels + logistic regression", f"{m['raw_test_accuracy']:.4f}", "", ""],
        ["same network from scratch (no pretraining)", f"{m['scratch_test_accuracy']:.4f}", "",
         ""],
        ["autoencoder − PCA", f"{m['ae_minus_pca_accuracy']:+.4f}", "", ""],
        ["autoencoder − raw pixels", f"{m['ae_minus_raw_accuracy']:+.4f}", "", ""],
        ["autoencoder − from scratch", f"{m['ae_minus_scratch_accuracy']:+.4f}", "", ""],
    ]  # fmt: skip


def html_page(
    path: str | Path, title: str, intro: str, table: list[list[str]], figures: list[tuple]
) -> None:
    """A self-contained HTML page: intro, a table (first row is the header), PNGs as base64."""
    cells = [
        "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row)
        for tag, row in [("th", table[0]), *(("td", row) for row in table[1:])]
    ]
    rows = "\n".join(f"<tr>{c}</tr>" for c in cells)
    imgs = "\n".join(
        f'<h2>{html.escape(caption)}</h2>\n<img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{base64.b64encode(Path(png).read_bytes()).decode()}">'
        for caption, png in figures
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1400px; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #999; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(intro)}</p>
<table>
{rows}
</table>
{imgs}
</body></html>
"""
    with files.atomic_path(path) as tmp:
        tmp.write_text(page)


def write_report(
    path: Path,
    figures: Path,
    metrics: Mapping[str, float],
    *,
    dataset: str,
    bottleneck: int,
    dropout: float,
    classify: Mapping[str, Any],
    seed: int,
    knn_neighbors: int,
    n_test: int,
    n_tsne: int,
) -> None:
    """The HTML report: the comparison table and every figure in `figures`, embedded."""
    intro = (
        f"Dataset {dataset}, {n_test} test images. The autoencoder and PCA classifiers are the "
        f"same head (Dense {classify['head_units']}, dropout {dropout}, softmax) trained the "
        f"same way ({training_recipe(classify, seed)}); PCA is fitted on the training images. "
        "Raw pixels: scikit-learn logistic regression. From scratch: the same encoder "
        "architecture and head, randomly initialised and trained end to end on the same labels."
    )
    html_page(
        path,
        f"ae-classify: autoencoder (bottleneck {bottleneck}) vs PCA, raw pixels and the same "
        "network from scratch",
        intro,
        comparison_table(metrics, bottleneck, knn_neighbors, n_tsne),
        [(caption, figures / name) for name, caption in FIGURES.items()],
    )
