"""Stage 4: test accuracy and loss, reconstruction error, comparison with the PCA and raw-pixel
baselines, t-SNE maps of the codes, figures and a self-contained HTML report."""

import json
import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from src import classify
from src.config import atomic_path, file_md5, select_params, user_errors, validate

log = logging.getLogger(__name__)

PARAMS = ["bottleneck", "dropout", "seed", "classify", "evaluate"]
MODELS = {  # key: what the figures and the report call it
    "autoencoder": "autoencoder codes + head",
    "pca": "PCA codes + same head",
    "raw": "raw pixels + logistic regression",
}


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


def fit_raw_baseline(x_train: np.ndarray, y_train: np.ndarray):
    """The raw-pixel baseline: logistic regression on the flattened training images."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # see tsne_map; here 4.7 s on two busy threads, 0.15 s on one
        return LogisticRegression(max_iter=2000).fit(classify.flat(x_train), y_train)


def tsne_subset(n: int, max_samples: int, seed: int) -> np.ndarray:
    """Sorted indices of at most max_samples of n samples, drawn at random."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:max_samples])


def pca_reconstruct(pca, x: np.ndarray) -> np.ndarray:
    return pca.inverse_transform(pca.transform(classify.flat(x))).reshape(x.shape)


def per_class_accuracy(y: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[float]:
    """Fraction of each class's samples predicted right (the per-class recall)."""
    from sklearn.metrics import recall_score

    recall = recall_score(y, y_pred, labels=range(n_classes), average=None, zero_division=0)
    return [float(r) for r in recall]


def tsne_map(codes: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE embedding of the codes."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = min(30.0, (len(codes) - 1) / 3)
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    # One thread: on a busy 2-core machine, spinning OpenMP/BLAS threads made t-SNE of 360
    # points take 30 s instead of 1 s.
    with threadpool_limits(1):
        return tsne.fit_transform(classify.flat(codes).astype(np.float64))


def knn_accuracy(points: np.ndarray, y: np.ndarray, k: int, seed: int) -> float:
    """Mean accuracy of a k-NN classifier on `points`, 5-fold stratified cross-validation."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    folds = min(5, int(np.unique(y, return_counts=True)[1].min()))  # tiny test sets: fewer
    if folds < 2:
        return float("nan")
    k = min(k, len(y) - len(y) // folds - 1)  # no more neighbours than a training fold holds
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(k), points, y, cv=cv).mean())


def examples(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of n samples, classes in turn: the first of each class, then the second, ..."""
    rank = np.zeros(len(y), dtype=int)
    for c in np.unique(y):
        rank[y == c] = np.arange(np.sum(y == c))
    return np.lexsort((y, rank))[:n]


def run(cfg: DictConfig, arrays: dict[str, np.ndarray], out: Path) -> dict[str, float]:
    """Evaluate the classifiers and baselines under `out`; write metrics, figures and report."""
    from sklearn.metrics import accuracy_score

    from src import data, models, plots, tracking

    p, e = cfg.paths, cfg.evaluate
    classifier = models.load(out / p.classifier)
    autoencoder = models.load(out / p.autoencoder)
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    metrics, y_pred = evaluate(classifier, autoencoder, x_test, y_test)
    class_names = [str(c) for c in arrays["class_names"]]
    n_classes = len(class_names)

    pca = classify.fit_pca(arrays["x_train"], cfg.bottleneck)  # the baseline's PCA, refitted
    keep = classify.labelled(cfg, arrays["y_train"])  # the raw baseline gets the same labels
    x_lab, y_lab = (arrays["x_train"], arrays["y_train"]) if keep is None else (
        arrays["x_train"][keep], arrays["y_train"][keep])  # fmt: skip
    raw = fit_raw_baseline(x_lab, y_lab)
    preds = {
        "autoencoder": y_pred,
        "pca": models.load(out / p.pca_classifier).predict(x_test, verbose=0).argmax(axis=1),
        "raw": raw.predict(classify.flat(x_test)),
    }
    accuracy = {name: float(accuracy_score(y_test, pred)) for name, pred in preds.items()}

    subset = tsne_subset(len(y_test), e.tsne_max_samples, cfg.seed)
    y_sub = y_test[subset]
    encoder = autoencoder.get_layer("encoder")
    maps = {
        "autoencoder": tsne_map(encoder.predict(x_test[subset], verbose=0), cfg.seed),
        "pca": tsne_map(pca.transform(classify.flat(x_test[subset])), cfg.seed),
    }
    knn = {name: knn_accuracy(m, y_sub, e.knn_neighbors, cfg.seed) for name, m in maps.items()}

    metrics.update(
        pca_test_accuracy=accuracy["pca"],
        raw_test_accuracy=accuracy["raw"],
        ae_minus_pca_accuracy=accuracy["autoencoder"] - accuracy["pca"],
        ae_minus_raw_accuracy=accuracy["autoencoder"] - accuracy["raw"],
        pca_reconstruction_mse=float(np.mean((pca_reconstruct(pca, x_test) - x_test) ** 2)),
        latent_knn_accuracy=knn["autoencoder"],
        pca_latent_knn_accuracy=knn["pca"],
    )

    with atomic_path(out / p.predictions) as tmp:
        rows = [f"{class_names[a]},{class_names[b]}" for a, b in zip(y_test, y_pred, strict=True)]
        tmp.write_text("\n".join(["actual,predicted", *rows]) + "\n")
    per_class = {name: per_class_accuracy(y_test, pred, n_classes) for name, pred in preds.items()}
    with atomic_path(out / p.per_class) as tmp:
        lines = [",".join(["class", *preds])]
        lines += [
            ",".join([n, *(f"{per_class[m][c]:.4f}" for m in preds)])
            for c, n in enumerate(class_names)
        ]
        tmp.write_text("\n".join(lines) + "\n")

    figures = out / p.figures
    plots.history(
        data.load_history(out / p.pretrain_history),
        data.load_history(out / p.classify_history),
        figures / "history.png",
    )
    plots.confusion(y_test, y_pred, class_names, figures / "confusion_matrix.png")
    plots.per_class_accuracy(
        {f"{MODELS[m]} ({accuracy[m]:.3f})": acc for m, acc in per_class.items()},
        class_names,
        figures / "per_class_accuracy.png",
    )
    codes = {"autoencoder": "autoencoder codes", "pca": "PCA codes"}
    plots.tsne(
        {
            f"t-SNE of {len(subset)} test images' {codes[m]} ({cfg.bottleneck}-D)\n"
            f"{e.knn_neighbors}-NN accuracy on this map: {knn[m]:.3f}": points
            for m, points in maps.items()
        },
        y_sub,
        class_names,
        figures / "tsne.png",
    )
    shown = examples(y_test, e.n_reconstructions)
    plots.reconstructions(
        x_test[shown],
        {
            f"autoencoder\n(test MSE {metrics['test_reconstruction_mse']:.4f})": (
                autoencoder.predict(x_test[shown], verbose=0)
            ),
            f"PCA\n(test MSE {metrics['pca_reconstruction_mse']:.4f})": (
                pca_reconstruct(pca, x_test[shown])
            ),
        },
        [class_names[c] for c in y_test[shown]],
        figures / "reconstructions.png",
    )
    with atomic_path(out / p.metrics) as tmp:
        summary = {**metrics, "bottleneck": cfg.bottleneck, "dropout": cfg.dropout}
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    write_report(cfg, metrics, len(y_test), len(subset), out)

    tracking.log_metrics(metrics)
    for path in (
        out / p.metrics,
        out / p.predictions,
        out / p.per_class,
        out / p.report,
        *sorted(figures.glob("*.png")),
    ):
        tracking.log_artifact(path, "evaluation")
    log.info(
        "test accuracy: autoencoder %.4f, PCA %.4f, raw pixels %.4f",
        accuracy["autoencoder"],
        accuracy["pca"],
        accuracy["raw"],
    )
    return metrics


def training_recipe(cfg: DictConfig) -> str:
    """How the classifiers were trained, in words, from the classify config."""
    c = cfg.classify
    parts = [
        f"{c.epochs} epochs, Adam {c.learning_rate}, batch {c.batch_size}, seed {cfg.seed}",
        f"encoder {'frozen' if c.freeze_encoder else 'trained with the head'}",
    ]
    if c.finetune:
        parts.append(
            f"then fine-tuned {c.finetune_epochs} epochs from {c.finetune_learning_rate}, "
            "cosine-decayed"
        )
    augment = [f"{k} {v}" for k, v in c.augment.items() if v]
    if augment:
        parts.append(f"random {', '.join(augment)} of the training images")
    if c.labels_per_class is not None:
        spread = ", spread over the codes to the other training images" if (
            c.label_spreading) else ""  # fmt: skip
        parts.append(f"labels_per_class={c.labels_per_class}{spread}")
    return "; ".join(parts)


def write_report(
    cfg: DictConfig, metrics: dict[str, float], n_test: int, n_tsne: int, out: Path
) -> None:
    """The HTML report at paths.report: a comparison table and every figure, embedded."""
    from src import plots

    m, b, k = metrics, cfg.bottleneck, cfg.evaluate.knn_neighbors
    table = [
        [
            "model",
            "test accuracy",
            "reconstruction MSE (test)",
            f"{k}-NN accuracy on the t-SNE map ({n_tsne} test images)",
        ],
        [
            f"autoencoder ({b}-D code) + head",
            f"{m['test_accuracy']:.4f}",
            f"{m['test_reconstruction_mse']:.5f}",
            f"{m['latent_knn_accuracy']:.4f}",
        ],
        [
            f"PCA ({b} components) + same head",
            f"{m['pca_test_accuracy']:.4f}",
            f"{m['pca_reconstruction_mse']:.5f}",
            f"{m['pca_latent_knn_accuracy']:.4f}",
        ],
        ["raw pixels + logistic regression", f"{m['raw_test_accuracy']:.4f}", "", ""],
        ["autoencoder − PCA", f"{m['ae_minus_pca_accuracy']:+.4f}", "", ""],
    ]
    intro = (
        f"Dataset {cfg.dataset.name}, {n_test} test images. The autoencoder and PCA classifiers "
        f"are the same head (Dense {cfg.classify.head_units}, dropout {cfg.dropout}, softmax) "
        f"trained the same way ({training_recipe(cfg)}); PCA is fitted on the training images. "
        "Raw pixels: scikit-learn logistic regression."
    )
    figures = out / cfg.paths.figures
    plots.report(
        out / cfg.paths.report,
        f"ae-classify: autoencoder (bottleneck {b}) vs PCA vs raw pixels",
        intro,
        table,
        [
            ("Test accuracy per class", figures / "per_class_accuracy.png"),
            ("t-SNE maps of the codes", figures / "tsne.png"),
            ("Reconstructions", figures / "reconstructions.png"),
            ("Confusion matrix of the autoencoder classifier", figures / "confusion_matrix.png"),
            ("Training curves", figures / "history.png"),
        ],
    )


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
