"""Load a labelled image dataset, check it, split it and scale it to [0, 1]."""

import logging
import zipfile
from pathlib import Path

import numpy as np

from src.config import UserError, atomic_path

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return images (n, h, w, c), integer labels (n,) and class names."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = digits.images[..., None]  # (1797, 8, 8, 1), pixel values 0..16
        return x, digits.target, [str(c) for c in digits.target_names]
    raise UserError(f"dataset.name={name!r} is not a known dataset")


def check(x: np.ndarray, y: np.ndarray) -> None:
    """Raise UserError naming the array and what is wrong with it."""
    if x.ndim != 4:
        raise UserError(f"images x must have shape (n, height, width, channels), got {x.shape}")
    if len(x) != len(y):
        raise UserError(f"images x has {len(x)} samples but labels y has {len(y)}")
    if not np.isfinite(x).all():
        raise UserError("images x contain NaN or infinite values")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise UserError(f"labels y must be non-negative integers of shape (n,), got {y.dtype}")
    if len(np.unique(y)) < 2:
        raise UserError("labels y hold a single class; classification needs at least two")


def scale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map the pixel range [lo, hi] to [0, 1] as float32."""
    return ((x.astype(np.float32) - lo) / max(hi - lo, 1e-12)).clip(0, 1)


def split(
    x: np.ndarray, y: np.ndarray, test_size: float, val_size: float, seed: int
) -> dict[str, np.ndarray]:
    """Stratified train/val/test split; sizes are fractions of all samples."""
    from sklearn.model_selection import train_test_split

    try:
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=test_size, stratify=y, random_state=seed
        )
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest,
            y_rest,
            test_size=val_size / (1 - test_size),
            stratify=y_rest,
            random_state=seed,
        )
    except ValueError as e:
        raise UserError(
            f"cannot split {len(x)} samples with dataset.test_size={test_size} "
            f"and dataset.val_size={val_size}: {e}"
        ) from None
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_val": x_val,
        "y_val": y_val,
        "x_test": x_test,
        "y_test": y_test,
    }


def prepare(name: str, test_size: float, val_size: float, seed: int) -> dict[str, np.ndarray]:
    """Load, check, split and scale a dataset into the arrays that `save` writes."""
    x, y, class_names = load_dataset(name)
    check(x, y)
    lo, hi = float(x.min()), float(x.max())
    arrays = split(x, y.astype(np.int64), test_size, val_size, seed)
    for s in SPLITS:
        arrays[f"x_{s}"] = scale(arrays[f"x_{s}"], lo, hi)
    arrays["class_names"] = np.array(class_names)
    arrays["pixel_range"] = np.array([lo, hi], dtype=np.float32)
    log.info("prepared %s: %s", name, {s: arrays[f"x_{s}"].shape for s in SPLITS})
    return arrays


def save(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def load(path: str | Path) -> dict[str, np.ndarray]:
    """Read prepared arrays, with a clear error for a missing or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prepared data {path} not found: run `python -m src.prepare` first")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"prepared data {path} is not a readable .npz file ({e})") from None
    missing = [k for s in SPLITS for k in (f"x_{s}", f"y_{s}") if k not in arrays]
    if missing or "class_names" not in arrays:
        raise UserError(f"prepared data {path} lacks arrays {missing or ['class_names']}")
    return arrays


def save_history(history: dict[str, list[float]], path: str | Path) -> None:
    """Write Keras' History.history as CSV with an `epoch` column (DVC plot data)."""
    keys = list(history)
    rows = zip(*(history[k] for k in keys), strict=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(",".join(["epoch", *keys]) + "\n")
            for epoch, row in enumerate(rows, start=1):
                f.write(",".join([str(epoch), *(f"{v:.6g}" for v in row)]) + "\n")


def load_history(path: str | Path) -> dict[str, list[float]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"training history {path} not found: run the stage that writes it first")
    table = np.genfromtxt(path, delimiter=",", names=True, ndmin=1)
    return {k: table[k].tolist() for k in table.dtype.names if k != "epoch"}
