"""Scores: test accuracy and loss, reconstruction error, per-class accuracy, t-SNE maps of the
codes and the k-NN accuracy on them."""

from typing import Any

import numpy as np


def classifier_metrics(classifier: Any, x: np.ndarray, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """({test_accuracy, test_loss}, predicted labels) of a Keras classifier on (x, y)."""
    loss, accuracy = classifier.evaluate(x, y, verbose=0)
    predicted = classifier.predict(x, verbose=0).argmax(axis=1)
    return {"test_accuracy": float(accuracy), "test_loss": float(loss)}, predicted


def reconstruction_mse(x: np.ndarray, reconstructed: np.ndarray) -> float:
    return float(np.mean((reconstructed - x) ** 2))


def accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(y == predicted))


def per_class_accuracy(y: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[float]:
    """Fraction of each class's samples predicted right (the per-class recall)."""
    from sklearn.metrics import recall_score

    recall = recall_score(y, y_pred, labels=range(n_classes), average=None, zero_division=0)
    return [float(r) for r in recall]


def tsne_subset(n: int, max_samples: int, seed: int) -> np.ndarray:
    """Sorted indices of at most max_samples of n samples, drawn at random."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:max_samples])


def tsne_map(codes: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE embedding of the codes (scikit-learn, Barnes-Hut), deterministic for a seed:
    500 iterations (250 of them early exaggeration) instead of the default 1000, angle 0.8."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = min(30.0, (len(codes) - 1) / 3)
    # Fewer iterations and a coarser angle: less than half the time on 2000 MNIST test codes,
    # the 5-NN accuracy on the map within 0.005 (benchmarks/evaluation.py, benchmarks/README.md).
    tsne = TSNE(2, perplexity=perplexity, init="pca", max_iter=500, angle=0.8, random_state=seed)
    # One thread: 2 OpenMP threads were slower on the shared 2 cores (benchmarks/evaluation.py).
    with threadpool_limits(1):
        return tsne.fit_transform(codes.reshape(len(codes), -1).astype(np.float64))


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
