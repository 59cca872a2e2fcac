"""Load a labelled image dataset, check it, split it and scale it to [0, 1]."""

import contextlib
import gzip
import io
import logging
import os
import socket
import zipfile
from pathlib import Path

import numpy as np

from src.files import atomic_path, write_csv
from src.runtime import UserError, first_line

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
KERAS_DATASETS = {  # loaded through keras.datasets unless dataset.path is set
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],  # fmt: skip
}
LOCAL_COPIES = {  # an example of dataset.path for each, as README and conf/dataset/ give them
    "mnist": "../shared/data/mnist.npz",
    "fashion_mnist": "/usr/share/datasets/fashion-mnist",
}
KERAS_HOST = "storage.googleapis.com"  # where keras.datasets downloads them from
KERAS_FILES = {  # what keras.datasets keeps of each in $KERAS_HOME/datasets (~/.keras)
    "mnist": ["mnist.npz"],
    "fashion_mnist": [f"fashion-mnist/{kind}-{what}-idx{n}-ubyte.gz"
                      for kind in ("train", "t10k") for what, n in (("labels", 1), ("images", 3))],
}  # fmt: skip
KERAS_TMP = Path("/tmp/.keras")  # where Keras keeps them when $KERAS_HOME is not writable
IDX_FILES = {  # the four files of the original MNIST / Fashion-MNIST distributions
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
DATASETS = ("digits", *KERAS_DATASETS, "npz")  # dataset.name: built in, keras.datasets, a file
LAYOUTS = (("x_train", "y_train", "x_test", "y_test"), ("x", "y"))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes, as MNIST is distributed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise UserError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != np.prod(shape):
        raise UserError(f"{path} holds {data.size} values but its header says {shape}")
    return data.reshape(shape)


def read_path(path: str) -> dict[str, np.ndarray]:
    """Arrays from a .npz file (x/y, or x_train/y_train/x_test/y_test) or a folder of IDX files."""
    p = Path(path).expanduser()
    if p.is_dir():
        files = {
            k: [f for f in (p / f"{n}.gz", p / n) if f.is_file()] for k, n in IDX_FILES.items()
        }
        missing = [f"{IDX_FILES[k]}.gz" for k, found in files.items() if not found]
        if missing:
            raise UserError(f"dataset.path={path!r}: folder lacks {', '.join(missing)} (IDX)")
        return {k: read_idx(found[0]) for k, found in files.items()}
    if not p.is_file():
        raise UserError(f"dataset.path={path!r} not found (relative paths start at {Path.cwd()})")
    arrays = read_npz(p, f"dataset.path={path!r}")
    for layout in LAYOUTS:
        if all(k in arrays for k in layout):
            return {k: arrays[k] for k in (*layout, "class_names") if k in arrays}
    raise UserError(
        f"dataset.path={path!r} holds arrays {sorted(arrays)}; it needs x and y, "
        "or x_train, y_train, x_test and y_test"
    )


def not_downloaded(name: str, reason: str) -> UserError:
    """The one line for a keras.datasets dataset that is neither on disk nor downloadable."""
    example = LOCAL_COPIES.get(name, f"{name}.npz")
    return UserError(
        f"{name} is not in ~/.keras/datasets and could not be downloaded ({reason}): set "
        f"dataset.path= to a local copy, e.g. dataset.path={example} (a .npz with x_train, "
        "y_train, x_test and y_test, or a folder of the four IDX .gz files)"
    )


def keras_cached(name: str) -> bool:
    """Whether keras.datasets has `name` on disk, where it reads it without a network: in
    $KERAS_HOME (default ~/.keras), or /tmp/.keras where that is not writable."""
    homes = [Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser(), KERAS_TMP]
    return any(all((home / "datasets" / f).is_file() for f in KERAS_FILES[name]) for home in homes)


def check_download(name: str, path: str | None) -> None:
    """Before TensorFlow loads, in a second: a dataset that keras.datasets would download, on a
    machine that cannot look up its server, stops with load_keras' one line."""
    if path is not None or name not in KERAS_FILES or keras_cached(name):
        return
    try:
        socket.getaddrinfo(KERAS_HOST, 443)
    except OSError as e:  # socket.gaierror: no network, no DNS
        raise not_downloaded(name, str(e)) from None


def load_keras(name: str) -> dict[str, np.ndarray]:
    """Download (or read from ~/.keras/datasets) a dataset that ships with keras.datasets; Keras'
    own "Downloading data from" line and progress bar are held back, so that a failed download
    is one error line."""
    import keras

    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as e:  # no network, a damaged cache, ...
        raise not_downloaded(name, download_error(e)) from None
    if "Downloading" in said.getvalue():
        log.info("downloaded %s into ~/.keras/datasets", name)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def download_error(e: Exception) -> str:
    """The reason in Keras' "URL fetch failure on <url>: <code> -- <reason>", or the message."""
    message = first_line(e)
    return message.rsplit(" -- ", 1)[-1] if message.startswith("URL fetch failure") else message


def load_dataset(
    name: str, path: str | None = None, class_names: list[str] | None = None
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Return the raw arrays (x/y, or x_train/y_train/x_test/y_test) and class names (or [])."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        arrays = {"x": digits.images, "y": digits.target}  # (1797, 8, 8), pixels 0..16
        names = [str(c) for c in digits.target_names]
    elif path is not None:
        arrays = read_path(path)
        names = [str(c) for c in arrays.pop("class_names", KERAS_DATASETS.get(name, []))]
    elif name in KERAS_DATASETS:
        arrays, names = load_keras(name), KERAS_DATASETS[name]
    else:
        raise UserError(f"dataset.name={name!r} needs dataset.path= (a .npz file or IDX folder)")
    if class_names is not None:
        names = [str(c) for c in class_names]
    return arrays, names


def check(x: np.ndarray, y: np.ndarray, split: str = "", n_classes: int | None = None) -> None:
    """Raise UserError naming the array (x_train, y_test, ...) and what is wrong with it."""
    xn, yn = (f"x_{split}", f"y_{split}") if split else ("x", "y")
    if x.ndim != 4:
        raise UserError(f"images {xn} must have shape (n, height, width, channels), got {x.shape}")
    if len(x) != len(y):
        raise UserError(f"images {xn} has {len(x)} samples but labels {yn} has {len(y)}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise UserError(f"images {xn} must hold real numbers, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise UserError(f"images {xn} contain NaN or infinite values")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise UserError(
            f"labels {yn} must be non-negative integers of shape (n,), got {y.dtype} {y.shape}"
        )
    if n_classes is not None and len(y) and y.max() >= n_classes:
        raise UserError(
            f"labels {yn} go up to {y.max()} but there are only {n_classes} class names "
            "(dataset.class_names)"
        )
    if len(np.unique(y)) < 2:
        raise UserError(f"labels {yn} hold a single class; classification needs at least two")


def scale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map the pixel range [lo, hi] to [0, 1] as float32 (one copy of x, then in place)."""
    x = x.astype(np.float32)
    x -= lo
    x /= max(hi - lo, 1e-12)
    return np.clip(x, 0, 1, out=x)


def stratified(
    x: np.ndarray, y: np.ndarray, size: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x kept, x taken, y kept, y taken): a seeded stratified `size` fraction taken out;
    `what` ("300 samples with dataset.test_size=...") names the input in the error."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(x, y, test_size=size, stratify=y, random_state=seed)
    except ValueError as e:
        raise UserError(f"cannot split {what}: {e}") from None


def split(
    arrays: dict[str, np.ndarray], test_size: float | None, val_size: float, seed: int
) -> dict[str, np.ndarray]:
    """Stratified train/val/test split. Data with its own test set (x_train, ..., y_test) keeps
    it and gives val_size of its training images to validation; data with only x and y gives
    test_size of all samples to test, then val_size of all samples to validation."""
    if "x_train" in arrays:
        what = f"{len(arrays['y_train'])} training samples with dataset.val_size={val_size}"
        x, y, val_fraction = arrays["x_train"], arrays["y_train"], val_size
    else:
        what = (
            f"{len(arrays['x'])} samples with dataset.test_size={test_size} "
            f"and dataset.val_size={val_size}"
        )
        x, x_test, y, y_test = stratified(arrays["x"], arrays["y"], test_size, seed, what)
        val_fraction = val_size / (1 - test_size)
    x_train, x_val, y_train, y_val = stratified(x, y, val_fraction, seed, what)
    parts = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
    if "x_train" in arrays:  # x_test and y_test stay where they are (the .npz's array order)
        return {**arrays, **parts}
    return {**parts, "x_test": x_test, "y_test": y_test}


def checked_pixel_range(raw: dict[str, np.ndarray], names: list[str]) -> tuple[float, float]:
    """Give grey images a channel axis (in `raw`), check every image/label pair and that train
    and test images have the same shape; return the pixel range over all images."""
    parts = ("train", "test") if "x_train" in raw else ("",)
    for part in parts:
        xk = f"x_{part}" if part else "x"
        if raw[xk].ndim == 3:  # grey images without a channel axis
            raw[xk] = raw[xk][..., None]
        check(raw[xk], raw[xk.replace("x", "y", 1)], part, len(names) if names else None)
    if "x_train" in raw and raw["x_train"].shape[1:] != raw["x_test"].shape[1:]:
        raise UserError(
            f"images x_train are {raw['x_train'].shape[1:]} but x_test are "
            f"{raw['x_test'].shape[1:]}: train and test images must have the same shape"
        )
    xs = [raw[f"x_{p}" if p else "x"] for p in parts]
    return float(min(x.min() for x in xs)), float(max(x.max() for x in xs))


def scaled(
    arrays: dict[str, np.ndarray], names: list[str], lo: float, hi: float
) -> dict[str, np.ndarray]:
    """The split arrays with pixels scaled from [lo, hi] to [0, 1], int64 labels, the class
    names (the label numbers when none are given) and the pixel range (in place)."""
    if not names:  # no class names given: the labels themselves
        names = [str(c) for c in range(max(int(arrays[f"y_{s}"].max()) for s in SPLITS) + 1)]
    for s in SPLITS:
        arrays[f"x_{s}"] = scale(arrays[f"x_{s}"], lo, hi)
        arrays[f"y_{s}"] = arrays[f"y_{s}"].astype(np.int64)
    arrays["class_names"] = np.array(names)
    arrays["pixel_range"] = np.array([lo, hi], dtype=np.float32)
    return arrays


def prepare(
    name: str,
    test_size: float | None,
    val_size: float,
    seed: int,
    path: str | None = None,
    class_names: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Load, check, split and scale a dataset into the arrays that `save` writes."""
    raw, names = load_dataset(name, path, class_names)
    lo, hi = checked_pixel_range(raw, names)
    if "x_train" not in raw and test_size is None:
        raise UserError(
            f"dataset.test_size is null but {path} has no test split (only x and y): "
            "set dataset.test_size to a fraction"
        )
    arrays = split(raw, test_size, val_size, seed)
    del raw  # the unsplit images, before scaling makes float32 copies
    arrays = scaled(arrays, names, lo, hi)
    shapes = {s: arrays[f"x_{s}"].shape for s in SPLITS}
    log.info("prepared %s, pixels %g..%g scaled to [0, 1]: %s", name, lo, hi, shapes)
    return arrays


def labelled_subset(y: np.ndarray, labels_per_class: int | float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, stratified subset of y: exactly N per class, or a fraction."""
    if isinstance(labels_per_class, float):
        from sklearn.model_selection import train_test_split

        idx, _ = train_test_split(
            np.arange(len(y)), train_size=labels_per_class, stratify=y, random_state=seed
        )
        return np.sort(idx)
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) < labels_per_class:
            raise UserError(
                f"classify.labels_per_class={labels_per_class} but class {c} has only "
                f"{len(members)} training samples"
            )
        picked.append(rng.choice(members, labels_per_class, replace=False))
    return np.sort(np.concatenate(picked))


def save(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def labelled(
    x: np.ndarray, y: np.ndarray, labels_per_class: int | float | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The training images whose labels may be used: all (no copy), or labelled_subset's."""
    if labels_per_class is None:
        return x, y
    keep = labelled_subset(y, labels_per_class, seed)
    return x[keep], y[keep]


def read_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz file, never unpickling; `what` names the file in the error."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{what} is not a readable .npz file ({e})") from None


def load(path: str | Path) -> dict[str, np.ndarray]:
    """Read prepared arrays, with a clear error for a missing or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prepared data {path} not found: run `python -m src.prepare` first")
    arrays = read_npz(path, f"prepared data {path}")
    missing = [k for s in SPLITS for k in (f"x_{s}", f"y_{s}") if k not in arrays]
    if missing or "class_names" not in arrays:
        raise UserError(f"prepared data {path} lacks arrays {missing or ['class_names']}")
    return arrays


def save_history(history: dict[str, list[float]], path: str | Path) -> None:
    """Write Keras' History.history as CSV with an `epoch` column (DVC plot data)."""
    rows = zip(*history.values(), strict=True)
    write_csv(
        path,
        ["epoch", *history],
        ([epoch, *(f"{v:.6g}" for v in row)] for epoch, row in enumerate(rows, start=1)),
    )


def load_history(path: str | Path) -> dict[str, list[float]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"training history {path} not found: run the stage that writes it first")
    table = np.genfromtxt(path, delimiter=",", names=True, ndmin=1)
    return {k: table[k].tolist() for k in table.dtype.names if k != "epoch"}
