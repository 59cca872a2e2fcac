"""The config's schema: a typed dataclass per section, what each key allows, and the checks.

conf/ holds every value; these dataclasses hold only types and ranges, so that a composed
config (from conf/ or params.yaml) is checked by OmegaConf's own type validation, then by the
ranges declared beside each key. They are not in Hydra's defaults list because `dvc exp run -S`
composes conf/ without importing this project.
"""

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from src.data import DATASETS
from src.runtime import UserError


def key(allowed: str, ok: Callable[[Any], bool] | None = None) -> Any:
    """A key whose value comes from conf/: what it allows, in words and as a check."""
    return field(default=MISSING, metadata={"allowed": allowed, "ok": ok})


def is_positive(v: Any) -> bool:
    return v > 0


def is_fraction(v: Any) -> bool:
    return 0 < v < 1


def is_rate(v: Any) -> bool:
    return 0 < v <= 1


POSITIVE = "a positive integer"
BOOL = "true or false"
RATE = "a number in (0, 1]"
PATIENCE = "null (no early stopping) or a positive integer (epochs without a better val_loss)"


@dataclass
class Dataset:
    name: str = key(f"one of {DATASETS}", lambda v: v in DATASETS)
    path: str | None = key("null or a path to a .npz file or a folder of IDX files", bool)
    class_names: list[str] | None = key(
        "null or a list of at least two distinct names", lambda v: len(set(v)) == len(v) >= 2
    )
    test_size: float | None = key("a fraction in (0, 1)", is_fraction)
    val_size: float = key("a fraction in (0, 1)", is_fraction)


@dataclass
class DenseModel:
    name: str = key("dense")
    hidden: list[int] = key("a list of positive integers", lambda v: all(u > 0 for u in v))
    activation: str = key("a Keras activation name")


@dataclass
class ConvModel:
    name: str = key("conv")
    filters: list[int] = key(
        "a non-empty list of positive integers (one Conv2D + pooling each)",
        lambda v: len(v) > 0 and all(f > 0 for f in v),
    )
    kernel_size: int = key(POSITIVE, is_positive)
    activation: str = key("a Keras activation name")


@dataclass
class LadderModel:  # docs/ladder.md
    name: str = key("ladder")
    hidden: list[int] = key("a list of positive integers", lambda v: all(u > 0 for u in v))
    noise_std: float = key("a non-negative number (0 = no noise)", lambda v: v >= 0)
    denoising_weights: list[float] = key(
        "a list of non-negative numbers, one per layer from the input up (len(hidden) + 2)",
        lambda v: all(w >= 0 for w in v),
    )
    variant: str = key("full or gamma", lambda v: v in ("full", "gamma"))
    epochs: int = key(POSITIVE, is_positive)
    batch_size: int = key(POSITIVE, is_positive)
    learning_rate: float = key(RATE, is_rate)
    decay_start: float = key("a fraction of the epochs in [0, 1]", lambda v: 0 <= v <= 1)


MODELS = {"dense": DenseModel, "conv": ConvModel, "ladder": LadderModel}  # models.BUILDERS


@dataclass
class Pretrain:
    epochs: int = key(POSITIVE, is_positive)
    batch_size: int = key(POSITIVE, is_positive)
    learning_rate: float = key(RATE, is_rate)
    loss: str = key("a Keras loss name")
    patience: int | None = key(PATIENCE, is_positive)
    noise_factor: float = key("a non-negative number (0 = no noise)", lambda v: v >= 0)


@dataclass
class Augment:
    shift: float = key("a number in [0, 1) (0 = off)", lambda v: 0 <= v < 1)
    rotation: float = key("a number in [0, 180) (0 = off)", lambda v: 0 <= v < 180)
    zoom: float = key("a number in [0, 1) (0 = off)", lambda v: 0 <= v < 1)


@dataclass
class Classify:
    epochs: int = key(POSITIVE, is_positive)
    batch_size: int = key(POSITIVE, is_positive)
    learning_rate: float = key(RATE, is_rate)
    patience: int | None = key(PATIENCE, is_positive)
    freeze_encoder: bool = key(BOOL)
    head_units: int = key(POSITIVE, is_positive)
    finetune: bool = key(BOOL)
    finetune_epochs: int = key(POSITIVE, is_positive)
    finetune_learning_rate: float = key(RATE, is_rate)
    labels_per_class: int | float | None = key(
        "null (all labels), a positive integer (per class) or a fraction in (0, 1)",
        lambda v: v > 0 if isinstance(v, int) else 0 < v < 1,
    )
    label_spreading: bool = key(BOOL)
    spreading_neighbors: int = key(POSITIVE, is_positive)
    self_training_rounds: int = key("a non-negative integer (0 = off)", lambda v: v >= 0)
    self_training_source: str = key(
        "predictions or spreading", lambda v: v in ("predictions", "spreading")
    )
    self_training_confidence: float = key("a number in [0, 1)", lambda v: 0 <= v < 1)
    self_training_epochs: int = key(POSITIVE, is_positive)
    augment: Augment = field(default_factory=Augment)


@dataclass
class Evaluate:
    tsne_max_samples: int = key("an integer >= 50", lambda v: v >= 50)
    knn_neighbors: int = key(POSITIVE, is_positive)
    n_reconstructions: int = key(POSITIVE, is_positive)


@dataclass
class Sweep:
    reuse_autoencoder: bool = key(BOOL)
    reuse_baselines: bool = key(BOOL)
    resume: bool = key(BOOL)


@dataclass
class Paths:
    prepared: str = key("a file path")
    encoder: str = key("a file path")
    autoencoder: str = key("a file path")
    classifier: str = key("a file path")
    preprocessing: str = key("a file path")
    pca: str = key("a file path")
    pca_classifier: str = key("a file path")
    scratch_classifier: str = key("a file path")
    pretrain_history: str = key("a file path")
    classify_history: str = key("a file path")
    metrics: str = key("a file path")
    predictions: str = key("a file path")
    per_class: str = key("a file path")
    figures: str = key("a folder path")
    report: str = key("a file path")
    cache: str = key("a folder path")


@dataclass
class Mlflow:
    enabled: bool = key(BOOL)
    tracking_uri: str = key("a tracking URI such as sqlite:///mlflow.db")
    experiment_name: str = key("an experiment name")
    registered_model_name: str = key("a registered model name")
    server: dict[str, Any] | None = None  # conf/mlflow/server.yaml: how to start the server


@dataclass
class Config:
    bottleneck: int = key(POSITIVE, is_positive)
    dropout: float = key("a number in [0, 1)", lambda v: 0 <= v < 1)
    seed: int = key("a non-negative integer", lambda v: v >= 0)
    pretrain: Pretrain = field(default_factory=Pretrain)
    classify: Classify = field(default_factory=Classify)
    evaluate: Evaluate = field(default_factory=Evaluate)
    sweep: Sweep = field(default_factory=Sweep)
    paths: Paths = field(default_factory=Paths)
    dataset: Dataset = field(default_factory=Dataset)
    model: Any = MISSING  # one of MODELS, checked by its name
    mlflow: Mlflow = field(default_factory=Mlflow)


def _not_allowed(name: str, value: Any, allowed: str) -> UserError:
    if isinstance(value, ListConfig | DictConfig):
        value = OmegaConf.to_container(value)
    return UserError(f"{name}={value!r} is not allowed: {name} must be {allowed}")


def _allowed(schema: type, dotted: str) -> str:
    """What the schema says key `dotted` (e.g. classify.augment.zoom) allows."""
    node: Any = schema
    spec = None
    for part in dotted.split("."):
        spec = {f.name: f for f in fields(node)}.get(part) if is_dataclass(node) else None
        if spec is None:
            return "of the type conf/ gives it"
        node = spec.type
    return spec.metadata.get("allowed", "of the type conf/ gives it")


def _typed(schema: type, cfg: DictConfig, prefix: str = "") -> DictConfig:
    """cfg merged into the schema: OmegaConf checks every type, the message names the key."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    except (ValidationError, ConfigKeyError) as e:
        name = str(e.full_key).split("[")[0]
        if isinstance(e, ConfigKeyError):
            raise UserError(f"{prefix}{name} is not a known key") from None
        raise _not_allowed(
            prefix + name, OmegaConf.select(cfg, name), _allowed(schema, name)
        ) from None
    missing = sorted(OmegaConf.missing_keys(typed))
    if missing:
        raise UserError(f"{prefix}{missing[0]} has no value: set it in conf/ or as key=value")
    return typed


def _check_ranges(schema: Any, cfg: DictConfig, prefix: str = "") -> None:
    for spec in fields(schema):
        value = cfg[spec.name]
        if is_dataclass(spec.type):
            _check_ranges(spec.type, value, f"{prefix}{spec.name}.")
        elif (ok := spec.metadata.get("ok")) and value is not None and not ok(value):
            raise _not_allowed(prefix + spec.name, value, spec.metadata["allowed"])


def _check_together(cfg: DictConfig) -> None:
    """The checks that involve two keys."""
    d, c = cfg.dataset, cfg.classify
    if d.name == "npz" and d.path is None:
        raise _not_allowed("dataset.path", None, "set for dataset=npz")
    own_test = "" if d.name == "digits" else ", or null to use the dataset's own test set"
    if (d.test_size is None and d.name == "digits") or (
        d.test_size is not None and d.test_size >= 1 - d.val_size
    ):
        raise _not_allowed(
            "dataset.test_size",
            d.test_size,
            "a fraction in (0, 1) such that dataset.test_size + dataset.val_size < 1" + own_test,
        )
    if c.label_spreading and c.labels_per_class is None:
        raise _not_allowed(
            "classify.label_spreading",
            True,
            "false unless classify.labels_per_class is set (it spreads those few labels)",
        )
    if c.self_training_rounds and c.labels_per_class is None:
        raise _not_allowed(
            "classify.self_training_rounds",
            c.self_training_rounds,
            "0 unless classify.labels_per_class is set (it labels the other training images)",
        )


def validate(cfg: DictConfig) -> DictConfig:
    """The composed config, typed and checked; a UserError names the first bad key."""
    name = OmegaConf.select(cfg, "model.name")
    if name not in MODELS:
        raise _not_allowed("model.name", name, f"one of {tuple(MODELS)}")
    model = _typed(MODELS[name], cfg.model, "model.")
    _check_ranges(MODELS[name], model, "model.")
    with_model = OmegaConf.merge(cfg, {"model": None})
    typed = _typed(Config, with_model)
    _check_ranges(Config, typed)
    typed.model = model
    _check_together(typed)
    return typed


def flatten(mapping: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested sections (a DictConfig, resolved, or a dict) as dotted keys with plain values:
    {"a": {"b": 1, "c": [2]}} -> {"a.b": 1, "a.c": [2]}; `prefix` goes before every key."""
    if isinstance(mapping, DictConfig):
        mapping = OmegaConf.to_container(mapping, resolve=True)
    flat: dict[str, Any] = {}
    for name, value in (mapping or {}).items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{name}."))
        elif isinstance(value, ListConfig):
            flat[f"{prefix}{name}"] = OmegaConf.to_container(value, resolve=True)
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def select_params(cfg: DictConfig, keys: list[str]) -> dict[str, Any]:
    """The config sections and keys named in `keys`, flattened to dotted names: MLflow params."""
    params: dict[str, Any] = {}
    for k in keys:
        params.update(flatten({k: OmegaConf.select(cfg, k)}))
    return params


def config_hash(cfg: DictConfig) -> str:
    """Short hash of the resolved config: the same for every stage of one `dvc repro`."""
    return hashlib.sha1(OmegaConf.to_yaml(cfg, resolve=True).encode()).hexdigest()[:12]
