"""Config validation, the one-line error a user sees, and small file helpers."""

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

DATASETS = ("digits", "mnist", "fashion_mnist", "npz")
MODELS = ("dense", "conv")


class UserError(Exception):
    """A problem with the user's config or files, reported as one line without a traceback."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a UserError or an interruption into `error: <message>` on stderr and exit code 1."""
    try:
        yield
    except UserError as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt as e:
        raise SystemExit(f"error: {str(e) or 'interrupted'}; outputs left as they were") from None


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is not allowed: {key} must be {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def validate(cfg: DictConfig) -> None:
    """Check every key the stages read; raise UserError naming the first bad one."""
    _check(cfg.dataset.name in DATASETS, "dataset.name", cfg.dataset.name, f"one of {DATASETS}")
    _check(cfg.model.name in MODELS, "model.name", cfg.model.name, f"one of {MODELS}")
    _check(
        _is_int(cfg.bottleneck) and cfg.bottleneck > 0,
        "bottleneck",
        cfg.bottleneck,
        "a positive integer",
    )
    _check(
        _is_number(cfg.dropout) and 0 <= cfg.dropout < 1,
        "dropout",
        cfg.dropout,
        "a number in [0, 1)",
    )
    _check(_is_int(cfg.seed) and cfg.seed >= 0, "seed", cfg.seed, "a non-negative integer")
    d = cfg.dataset
    _check(
        d.path is None or (isinstance(d.path, str) and d.path != ""),
        "dataset.path",
        d.path,
        "null or a path to a .npz file or a folder of IDX files",
    )
    _check(d.name != "npz" or d.path is not None, "dataset.path", d.path, "set for dataset=npz")
    names = d.class_names
    _check(
        names is None
        or (isinstance(names, ListConfig) and len(names) >= 2 and len(set(names)) == len(names)),
        "dataset.class_names",
        names,
        "null or a list of at least two distinct names",
    )
    _check(
        _is_number(d.val_size) and 0 < d.val_size < 1,
        "dataset.val_size",
        d.val_size,
        "a fraction in (0, 1)",
    )
    _check(
        (d.test_size is None and d.name != "digits")
        or (_is_number(d.test_size) and 0 < d.test_size < 1 - d.val_size),
        "dataset.test_size",
        d.test_size,
        "a fraction in (0, 1) such that dataset.test_size + dataset.val_size < 1"
        + ("" if d.name == "digits" else ", or null to use the dataset's own test set"),
    )
    m = cfg.model
    if m.name == "dense":
        _check(
            isinstance(m.hidden, ListConfig) and all(_is_int(u) and u > 0 for u in m.hidden),
            "model.hidden",
            m.hidden,
            "a list of positive integers",
        )
    if m.name == "conv":
        _check(
            isinstance(m.filters, ListConfig)
            and len(m.filters) > 0
            and all(_is_int(f) and f > 0 for f in m.filters),
            "model.filters",
            m.filters,
            "a non-empty list of positive integers (one Conv2D + pooling each)",
        )
        _check(
            _is_int(m.kernel_size) and m.kernel_size > 0,
            "model.kernel_size",
            m.kernel_size,
            "a positive integer",
        )
    for stage in ("pretrain", "classify"):
        for key in ("epochs", "batch_size"):
            v = cfg[stage][key]
            _check(_is_int(v) and v > 0, f"{stage}.{key}", v, "a positive integer")
        lr = cfg[stage].learning_rate
        _check(_is_number(lr) and 0 < lr <= 1, f"{stage}.learning_rate", lr, "a number in (0, 1]")
    _check(
        _is_int(cfg.classify.head_units) and cfg.classify.head_units > 0,
        "classify.head_units",
        cfg.classify.head_units,
        "a positive integer",
    )
    _check(
        isinstance(cfg.classify.freeze_encoder, bool),
        "classify.freeze_encoder",
        cfg.classify.freeze_encoder,
        "true or false",
    )
    for key in ("knn_neighbors", "n_reconstructions"):
        v = cfg.evaluate[key]
        _check(_is_int(v) and v > 0, f"evaluate.{key}", v, "a positive integer")
    v = cfg.evaluate.tsne_max_samples
    _check(_is_int(v) and v >= 50, "evaluate.tsne_max_samples", v, "an integer >= 50")
    c = cfg.classify
    _check(isinstance(c.finetune, bool), "classify.finetune", c.finetune, "true or false")
    _check(
        _is_int(c.finetune_epochs) and c.finetune_epochs > 0,
        "classify.finetune_epochs",
        c.finetune_epochs,
        "a positive integer",
    )
    lr = c.finetune_learning_rate
    _check(
        _is_number(lr) and 0 < lr <= 1, "classify.finetune_learning_rate", lr, "a number in (0, 1]"
    )
    n = c.labels_per_class
    _check(
        n is None or (_is_int(n) and n > 0) or (isinstance(n, float) and 0 < n < 1),
        "classify.labels_per_class",
        n,
        "null (all labels), a positive integer (per class) or a fraction in (0, 1)",
    )
    _check(
        isinstance(c.label_spreading, bool),
        "classify.label_spreading",
        c.label_spreading,
        "true or false",
    )
    _check(
        not c.label_spreading or n is not None,
        "classify.label_spreading",
        c.label_spreading,
        "false unless classify.labels_per_class is set (it spreads those few labels)",
    )
    k = c.spreading_neighbors
    _check(_is_int(k) and k > 0, "classify.spreading_neighbors", k, "a positive integer")
    for key, limit in [("shift", 1), ("rotation", 180), ("zoom", 1)]:
        v = c.augment[key]
        _check(
            _is_number(v) and 0 <= v < limit,
            f"classify.augment.{key}",
            v,
            f"a number in [0, {limit}) (0 = off)",
        )
    noise = cfg.pretrain.noise_factor
    _check(
        _is_number(noise) and noise >= 0,
        "pretrain.noise_factor",
        noise,
        "a non-negative number (0 = no noise)",
    )


def select_params(cfg: DictConfig, keys: list[str]) -> dict[str, Any]:
    """Flatten the config sections named in `keys` into dotted names, as MLflow params."""
    out: dict[str, Any] = {}
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, DictConfig):
            out.update(select_params(cfg, [f"{key}.{k}" for k in value]))
        else:
            out[key] = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
    return out


def config_hash(cfg: DictConfig) -> str:
    """Short hash of the resolved config: the same for every stage of one `dvc repro`."""
    return hashlib.sha1(OmegaConf.to_yaml(cfg, resolve=True).encode()).hexdigest()[:12]


def file_md5(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`, renamed into place only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {path.parent}: {e.strerror}") from None
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
