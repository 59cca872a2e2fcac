"""The whole experiment for one config in one process: prepare (cached) -> pretrain (cached) ->
classify -> evaluate, written into Hydra's job output folder so that `-m` sweeps never collide.

In a sweep (`-m`), src.sweep.SweepCallback makes the parent MLflow run; each point is a child
run, and a point that fails is recorded (run FAILED, result.json) while the others go on.
"""

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src import search
from src.config import config_hash, select_params, validate
from src.files import Memo, file_md5, write_json
from src.runtime import quiet_tensorflow, user_errors

log = logging.getLogger(__name__)

PARAMS = ["dataset", "model", "bottleneck", "dropout", "seed", "pretrain", "classify", "evaluate"]
SRC = Path(__file__).resolve().parent
AUTOENCODER_CODE = ("models.py", "training.py", "pretrain.py")  # what trains an autoencoder


def source_stamp(path: str | None) -> list[list]:
    """Size and modification time of dataset.path (of each file, for a folder): a user's data
    file replaced in place gets a new cache entry, as make and DVC notice changed files."""
    if path is None:
        return []
    root = Path(path)
    files = sorted(root.rglob("*")) if root.is_dir() else [root]
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def prepared_data(cfg: DictConfig) -> tuple[dict[str, np.ndarray], Path]:
    """Prepared arrays for cfg.dataset and cfg.seed, cached under paths.cache by their config
    and the size and time of the dataset's file."""
    from filelock import FileLock

    from src import data

    inputs = {"dataset": cfg.dataset, "seed": cfg.seed, "source": source_stamp(cfg.dataset.path)}
    key = config_hash(OmegaConf.create(inputs))
    path = Path(cfg.paths.cache) / f"prepared-{cfg.dataset.name}-{key}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if not path.is_file():
            d = cfg.dataset
            arrays = data.prepare(d.name, d.test_size, d.val_size, cfg.seed, d.path, d.class_names)
            data.save(arrays, path)
    return data.load(path), path


def autoencoder_key(cfg: DictConfig, data_hash: str) -> str:
    """Everything the autoencoder depends on: data, model, bottleneck, seed, pretrain, code."""
    inputs = {
        "data_hash": data_hash,
        "model": cfg.model,
        "bottleneck": cfg.bottleneck,
        "seed": cfg.seed,
        "pretrain": cfg.pretrain,
        "code": [file_md5(SRC / f) for f in AUTOENCODER_CODE],
    }
    return config_hash(OmegaConf.create(inputs))


def pretrain_cached(cfg: DictConfig, arrays: dict, out: Path, data_hash: str) -> str | None:
    """Put encoder, autoencoder and history under `out`: from the cache, or trained and cached.

    Returns the id of the MLflow run that trained the autoencoder. A file lock makes parallel
    jobs with the same key wait for one training instead of training twice.
    """
    from filelock import FileLock

    from src import pretrain, tracking

    p = cfg.paths
    files = [p.encoder, p.autoencoder, p.pretrain_history]
    if not cfg.sweep.reuse_autoencoder:
        pretrain.run(cfg, arrays, out)
        return tracking.active_run_id()
    key = autoencoder_key(cfg, data_hash)
    cached = Path(p.cache) / "autoencoders" / key
    cached.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{cached}.lock"):
        if (cached / "run.json").is_file():
            for f in files:
                (out / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(cached / f, out / f)
            trained_by = json.loads((cached / "run.json").read_text())["run_id"]
            log.info("reusing autoencoder %s (trained by run %s)", key, trained_by)
            return trained_by
        pretrain.run(cfg, arrays, out)
        trained_by = tracking.active_run_id()
        tmp = cached.with_name(f".{key}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for f in files:
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / f, tmp / f)
        (tmp / "run.json").write_text(json.dumps({"run_id": trained_by}))
        os.replace(tmp, cached)  # the cache entry appears whole or not at all
        return trained_by


def point_key(cfg: DictConfig, data_hash: str) -> str:
    """What makes a sweep point the same point again: its resolved config, data and code."""
    code = [file_md5(f) for f in sorted(SRC.glob("*.py"))]
    inputs = {"config": config_hash(cfg), "data_hash": data_hash, "code": code}
    return config_hash(OmegaConf.create(inputs))


def train_point(cfg: DictConfig, out: Path, run_name: str) -> dict[str, Any]:
    """Run one point of the experiment; return its result (metrics, run ids, time). In a
    resumed sweep, a point that already FINISHED under the parent run returns its result."""
    import keras

    from src import classify, evaluate, tracking

    keras.backend.clear_session()  # sweep points share one process
    start = time.perf_counter()
    arrays, data_path = prepared_data(cfg)
    data_hash = file_md5(data_path)
    key = point_key(cfg, data_hash)
    parent = os.environ.get(tracking.PARENT_RUN_ENV)
    resumable = cfg.sweep.resume and search.trial_number() is None  # a study resumes itself
    if parent and resumable and (done := tracking.finished_child(parent, key)):
        log.info("%s FINISHED before in run %s: reused, not trained again", run_name, done)
        return tracking.load_dict(done, "result.json")
    tags = {"stage": "train", "data_hash": data_hash, "output_dir": str(out), "point_key": key,
            **search.trial_tags()}  # fmt: skip
    params = select_params(cfg, PARAMS)
    with tracking.start_run(cfg, run_name, params, tags, parent_run_id=parent):
        tracking.log_dataset(arrays["x_train"], arrays["y_train"], f"{cfg.dataset.name}-train",
                             data_hash[:12], str(data_path.resolve()))  # fmt: skip
        autoencoder_run_id = pretrain_cached(cfg, arrays, out, data_hash)
        if autoencoder_run_id:
            tracking.set_tags({"autoencoder_run_id": autoencoder_run_id})
        memo = Memo(Path(cfg.paths.cache) / "shared" if cfg.sweep.reuse_baselines else None,
                    data=data_hash)  # fmt: skip
        try:  # a search's trial reports each epoch to its study, whose pruner may stop it
            classify.run(cfg, arrays, out, memo, callbacks=search.pruning_callbacks())
        except Exception as e:
            if not search.is_pruned(e):
                raise
            run_id = tracking.active_run_id()
            search.end_pruned_run(e)  # KILLED, tagged `pruned`
            return {"pruned": str(e), "run_id": run_id, "data_hash": data_hash}
        metrics = evaluate.run(cfg, arrays, out, memo)
        tracking.set_tags({f"reused.{name}": key for name, key in memo.reused.items()})
        seconds = time.perf_counter() - start
        tracking.log_metrics({"train_seconds": seconds})
        result = {
            **metrics,
            "train_seconds": seconds,
            "run_id": tracking.active_run_id(),
            "autoencoder_run_id": autoencoder_run_id,
            "data_hash": data_hash,
            # where "all labels" lies on a sweep's label-budget axis (src.stats.label_budget)
            "train_images_per_class": len(arrays["y_train"]) / len(arrays["class_names"]),
        }
        tracking.log_dict(result, "result.json")  # what a resumed sweep reads back
    return result


SHORT_NAMES = {"bottleneck": "b", "dropout": "d", "seed": "s"}


def point_name(overrides: list[str]) -> str:
    """A sweep point's run name: the values of the keys the sweep varies, short enough for the
    MLflow UI's run column (b16-d0.5-s1, labels_per_class=10-finetune=True-s0: a dotted key by
    its last part); every override when the sweep varies none."""
    from src import sweep, tracking

    swept = os.environ.get(tracking.SWEPT_KEYS_ENV, "").split(",")
    parts = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key in swept:
            value = sweep.short_number(value)
            short = SHORT_NAMES.get(key)
            parts.append(short + value if short else f"{key.rsplit('.', 1)[-1]}={value}")
    return "-".join(parts) or ",".join(overrides)


def write_result(out: Path, cfg: DictConfig, status: str, **fields) -> None:
    """result.json in the job folder: what src.sweep summarises, with or without MLflow."""
    point = {k: cfg[k] for k in ("bottleneck", "dropout", "seed")}
    write_json(out / "result.json", {"status": status, **point, **fields})


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    sweep = hc.mode == RunMode.MULTIRUN
    with user_errors():
        quiet_tensorflow()
        run_name = point_name(list(hc.overrides.task)) if sweep else hc.job.override_dirname
        run_name = run_name or "train"
        if (trial := search.trial_number()) is not None:
            run_name = f"t{trial}-{run_name}"
        try:
            result = train_point(validate(cfg), out, run_name)
        except KeyboardInterrupt:
            write_result(out, cfg, "KILLED", error="interrupted")
            raise
        except Exception as e:
            write_result(out, cfg, "FAILED", error=f"{type(e).__name__}: {e}")
            if not sweep:
                raise
            log.error("sweep point %s failed: %s", run_name, e)
            return None
    if "pruned" in result:  # a search's pruner stopped it: not a failure
        write_result(out, cfg, "PRUNED", error=result.pop("pruned"), **result)
        log.info("%s pruned", run_name)
        return None
    write_result(out, cfg, "FINISHED", **result)
    log.info("outputs in %s", out)
    return result["val_accuracy"]  # what a sweeper optimises: never the test accuracy


if __name__ == "__main__":
    main()
