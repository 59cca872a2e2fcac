"""The baselines the autoencoder must beat: PCA codes through the same head, and logistic
regression on raw pixels. The PCA is fitted once (classify) and saved for evaluate."""

from pathlib import Path
from typing import Any

import numpy as np

from src import data, files, training

PCA = dict[str, np.ndarray]  # "components" (k, pixels) and "mean" (pixels,), as scikit-learn's


def flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def fit_pca(x_train: np.ndarray, n_components: int) -> PCA:
    """PCA of the training images, exact and deterministic, from the eigenvectors of the pixel
    covariance (a d x d matrix, where a full SVD holds the n x d images again)."""
    from sklearn.decomposition import PCA as SkPCA
    from threadpoolctl import threadpool_limits

    # One BLAS thread: two spinning threads were far slower on a busy 2-core machine.
    with threadpool_limits(1):
        pca = SkPCA(n_components, svd_solver="covariance_eigh").fit(flat(x_train))
    return {"components": pca.components_, "mean": pca.mean_}


ROWS = 8192  # rows per float64 block of `product`: MNIST's training images in 7 of 51 MB


def product(a: np.ndarray, b: np.ndarray, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """(a + shift) @ b as float32, the same on any BLAS thread count, kernel or load: summed in
    float64 on one thread, then rounded. Summed in float32, the digits test set's PCA codes
    differed between 1 and 2 BLAS threads (by up to 4e-7), enough for another t-SNE map."""
    from threadpoolctl import threadpool_limits

    out = np.empty((len(a), b.shape[1]), np.float32)
    b64 = b.astype(np.float64)
    with threadpool_limits(1, user_api="blas"):
        for i in range(0, len(a), ROWS):
            out[i : i + ROWS] = (a[i : i + ROWS].astype(np.float64) + shift) @ b64
    return out


def pca_codes(pca: PCA, x: np.ndarray) -> np.ndarray:
    return product(flat(x), pca["components"].T, -pca["mean"].astype(np.float64))


def pca_reconstruct(pca: PCA, x: np.ndarray) -> np.ndarray:
    return (product(pca_codes(pca, x), pca["components"]) + pca["mean"]).reshape(x.shape)


def save_pca(pca: PCA, path: str | Path) -> None:
    with files.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **pca)


def load_pca(path: str | Path) -> PCA:
    arrays = data.read_npz(path, f"PCA baseline {path}")
    return {k: arrays[k] for k in ("components", "mean")}


def fit_pca_classifier(
    pca: PCA,
    arrays: dict[str, np.ndarray],
    labels: dict[str, Any],
    settings: dict[str, Any],
    callbacks: list | None = None,
) -> Any:
    """PCA codes through the same head, trained the same way (`settings` of fit_classifier).

    The projection is a Keras encoder, frozen or fine-tuned just as the autoencoder's; like the
    autoencoder it saw all training images, while the head sees the same labels (`labels`:
    training_labels' settings; spread over the PCA codes when spreading is on).
    """
    from src import models

    w = pca["components"].T
    x_train = arrays["x_train"]
    encoder = models.build_linear_encoder(x_train.shape[1:], w, -pca["mean"] @ w, "pca_encoder")
    codes = pca_codes(pca, x_train), pca_codes(pca, arrays["x_val"])
    classifier, _ = training.fit_on_labels(encoder, arrays, labels, settings, codes, callbacks)
    return classifier


def fit_raw_baseline(x_train: np.ndarray, y_train: np.ndarray) -> Any:
    """The raw-pixel baseline: logistic regression (multinomial, L2, C=1, lbfgs) on the
    flattened training images, stopped at tol=5e-4 rather than the default 1e-4."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    # tol 5e-4 instead of 1e-4, float32, one BLAS thread: about 3x faster on MNIST at the same
    # accuracy (benchmarks/evaluation.py; its figures in benchmarks/README.md).
    with threadpool_limits(1):
        model = LogisticRegression(tol=5e-4, max_iter=2000)
        return model.fit(flat(x_train), y_train)


def fit_scratch_classifier(
    model: dict[str, Any],
    bottleneck: int,
    arrays: dict[str, np.ndarray],
    labels: dict[str, Any],
    settings: dict[str, Any],
) -> Any:
    """The rival of pretraining: the same encoder architecture, randomly initialised, with the
    same head, trained end to end on the same labels (`settings` of fit_classifier) for as
    many epochs as the classifier's head and fine-tuning together, with the same early
    stopping and augmentation; label spreading runs over this untrained encoder's codes."""
    import keras

    from src import models

    keras.utils.set_random_seed(settings["seed"])
    _, encoder = models.build(model, arrays["x_train"].shape[1:], bottleneck)
    epochs = settings["epochs"] + settings["finetune_epochs"]
    scratch = {**settings, "freeze_encoder": False, "epochs": epochs, "finetune_epochs": 0}
    classifier, _ = training.fit_on_labels(encoder, arrays, labels, scratch)
    return classifier
