"""The whole experiment for one config in one process: prepare (cached) -> pretrain (cached) ->
classify -> evaluate, written into Hydra's job output folder so that `-m` sweeps never collide.

In a sweep (`-m`), src.sweeps.callback.SweepCallback makes the parent MLflow run and the
context (src.sweeps.context) each job reads; each point is a child run, and a point that fails
is recorded (run FAILED, result.json) while the others go on.
"""

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from src import cli
from src.cache import Cache
from src.config import config_hash, select_params, validate
from src.files import file_md5
from src.runtime import quiet_tensorflow, user_errors
from src.sweeps import context, job
from src.sweeps.context import SweepContext

log = logging.getLogger(__name__)

PARAMS = ["dataset", "model", "bottleneck", "dropout", "seed", "pretrain", "classify", "evaluate"]
SRC = Path(__file__).resolve().parent


def source_stamp(path: str | None) -> list[list]:
    """Size and modification time of dataset.path (of each file, for a folder): a user's data
    file replaced in place gets a new cache entry, as make and DVC notice changed files."""
    if path is None:
        return []
    root = Path(path)
    files = sorted(root.rglob("*")) if root.is_dir() else [root]
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def prepared_inputs(cfg: DictConfig) -> dict[str, Any]:
    """What prepared data is cached by: its config, the size and time of the dataset's files."""
    d = cfg.dataset
    return {"dataset": OmegaConf.to_container(d, resolve=True), "seed": cfg.seed,
            "source": source_stamp(d.path)}  # fmt: skip


def prepared_data(cfg: DictConfig) -> tuple[dict[str, np.ndarray], Path]:
    """Prepared arrays for cfg.dataset and cfg.seed, and their .npz file: a cache entry keyed by
    prepared_inputs and data.prepare's code."""
    from src import data

    d = cfg.dataset
    name = f"{d.name}.npz"

    def prepare(folder: Path) -> None:
        arrays = data.prepare(d.name, d.test_size, d.val_size, cfg.seed, d.path, d.class_names)
        data.save(arrays, folder / name)

    entry = Cache(cfg.paths.cache).folder("prepared", prepared_inputs(cfg), prepare, code=data)
    return data.load(entry / name), entry / name


def check_dataset(cfg: DictConfig) -> None:
    """Before TensorFlow loads: a dataset to download on a machine offline is one line at once,
    unless the cache holds its prepared data."""
    from src import data

    if not Cache(cfg.paths.cache).has("prepared", prepared_inputs(cfg), code=data):
        data.check_download(cfg.dataset.name, cfg.dataset.path)


def autoencoder_inputs(cfg: DictConfig, data_hash: str) -> dict[str, Any]:
    """All but the code that an autoencoder depends on: data, model, bottleneck, seed, pretrain."""
    return {"data_hash": data_hash, "model": OmegaConf.to_container(cfg.model, resolve=True),
            "bottleneck": cfg.bottleneck, "seed": cfg.seed,
            "pretrain": OmegaConf.to_container(cfg.pretrain, resolve=True),
            # model=ladder trains on the labels too (docs/ladder.md)
            **({"labels_per_class": cfg.classify.labels_per_class}
               if cfg.model.name == "ladder" else {})}  # fmt: skip


def autoencoder_key(cfg: DictConfig, data_hash: str) -> str:
    """The autoencoder's cache key: its inputs and the source of pretrain.run's imports."""
    from src import pretrain

    inputs = autoencoder_inputs(cfg, data_hash)
    return Cache(cfg.paths.cache).key("autoencoders", inputs, pretrain)


def pretrain_cached(cfg: DictConfig, arrays: dict, out: Path, data_hash: str) -> str | None:
    """Put encoder, autoencoder and history under `out`: from the cache, or trained and cached.

    Returns the id of the MLflow run that trained the autoencoder. A file lock makes parallel
    jobs with the same key wait for one training instead of training twice.
    """
    from src import pretrain, tracking

    p = cfg.paths
    if not cfg.sweep.reuse_autoencoder:
        pretrain.run(cfg, arrays, out)
        return tracking.active_run_id()

    def train(folder: Path) -> None:
        pretrain.run(cfg, arrays, folder)
        (folder / "run.json").write_text(json.dumps({"run_id": tracking.active_run_id()}))

    cache = Cache(p.cache)
    inputs = autoencoder_inputs(cfg, data_hash)
    entry = cache.folder("autoencoders", inputs, train, code=pretrain)  # pretrain.run's imports
    for f in (p.encoder, p.autoencoder, p.pretrain_history):
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(entry / f, out / f)
    trained_by = json.loads((entry / "run.json").read_text())["run_id"]
    if cache.reused:
        log.info("reusing autoencoder %s (trained by run %s)", entry.name, trained_by)
    return trained_by


def point_key(cfg: DictConfig, data_hash: str) -> str:
    """What makes a sweep point the same point again: its resolved config, data and code."""
    code = [file_md5(f) for f in sorted(SRC.rglob("*.py"))]
    inputs = {"config": config_hash(cfg), "data_hash": data_hash, "code": code}
    return config_hash(OmegaConf.create(inputs))


def finished_before(ctx: SweepContext | None, key: str, run_name: str) -> dict | None:
    """In a resumed grid sweep, the result of this point's FINISHED run under the parent."""
    from src import tracking

    if ctx is None or not ctx.resume or not ctx.parent_run_id:
        return None
    if done := tracking.finished_child(ctx.parent_run_id, key):
        log.info("%s FINISHED before in run %s: reused, not trained again", run_name, done)
        return tracking.load_dict(done, "result.json")
    return None


def classify_and_evaluate(cfg: DictConfig, arrays: dict, out: Path, ctx: SweepContext | None,
                          data_hash: str) -> dict[str, Any]:  # fmt: skip
    """The classifier and the baselines, then the evaluation: its metrics, or {"pruned": why}
    when a search's pruner stopped the classifier (its run then ends KILLED)."""
    from src import classify, evaluate, tracking

    cache = Cache(cfg.paths.cache if cfg.sweep.reuse_baselines else None, data=data_hash)
    try:  # a search's trial reports each epoch to its study, whose pruner may stop it
        classify.run(cfg, arrays, out, cache, callbacks=job.pruning_callbacks(ctx))
    except Exception as e:
        if not job.is_pruned(e):
            raise
        run_id = tracking.active_run_id()
        job.end_pruned_run(e)  # KILLED, tagged `pruned`
        return {"pruned": str(e), "run_id": run_id}
    metrics = evaluate.run(cfg, arrays, out, cache)
    tracking.set_tags({f"reused.{name}": key for name, key in cache.reused.items()})
    return metrics


def train_point(cfg: DictConfig, out: Path, run_name: str, ctx: SweepContext | None = None
                ) -> dict[str, Any]:  # fmt: skip
    """Run one point of the experiment; return its result (metrics, run ids, time)."""
    import keras

    from src import tracking

    keras.backend.clear_session()  # sweep points share one process
    start = time.perf_counter()
    arrays, data_path = prepared_data(cfg)
    data_hash = file_md5(data_path)
    key = point_key(cfg, data_hash)
    if (done := finished_before(ctx, key, run_name)) is not None:
        return done
    tags = {"stage": "train", "data_hash": data_hash, "output_dir": str(out), "point_key": key,
            **job.trial_tags(ctx)}  # fmt: skip
    parent = ctx.parent_run_id if ctx else None
    with tracking.start_run(cfg, run_name, select_params(cfg, PARAMS), tags, parent):
        tracking.log_dataset(arrays["x_train"], arrays["y_train"], f"{cfg.dataset.name}-train",
                             data_hash[:12], str(data_path.resolve()))  # fmt: skip
        autoencoder_run_id = pretrain_cached(cfg, arrays, out, data_hash)
        if autoencoder_run_id:
            tracking.set_tags({"autoencoder_run_id": autoencoder_run_id})
        result = classify_and_evaluate(cfg, arrays, out, ctx, data_hash)
        if "pruned" in result:
            return {**result, "data_hash": data_hash}
        seconds = time.perf_counter() - start
        tracking.log_metrics({"train_seconds": seconds})
        # where "all labels" lies on a sweep's label-budget axis (src.sweeps.summary)
        per_class = len(arrays["y_train"]) / len(arrays["class_names"])
        result = {**result, "train_seconds": seconds, "run_id": tracking.active_run_id(),
                  "autoencoder_run_id": autoencoder_run_id, "data_hash": data_hash,
                  "train_images_per_class": per_class}  # fmt: skip
        tracking.log_dict(result, "result.json")  # what a resumed sweep reads back
    return result


def run_job(cfg: DictConfig, out: Path, run_name: str, ctx: SweepContext | None) -> dict | None:
    """train_point with its result.json written whatever happens; a sweep's failed point is
    logged and returns None so that the others go on."""
    try:
        result = train_point(validate(cfg), out, run_name, ctx)
    except KeyboardInterrupt:
        job.write_result(out, cfg, "KILLED", error="interrupted")
        raise
    except Exception as e:
        job.write_result(out, cfg, "FAILED", error=job.failure(e))
        if ctx is None:
            raise
        log.error("sweep point %s failed: %s", run_name, job.failure(e))
        return None
    status = "PRUNED" if "pruned" in result else "FINISHED"
    job.write_result(out, cfg, status, run_name=run_name,
                     **{k: v for k, v in result.items() if k != "pruned"},
                     **({"error": result["pruned"]} if "pruned" in result else {}))  # fmt: skip
    return result


@cli.checked_choices
@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    with user_errors():
        ctx = context.current()
        if ctx is None:  # config errors before TensorFlow loads; a sweep's run_job records them
            check_dataset(validate(cfg))
        quiet_tensorflow()
        run_name = job.run_name(ctx, list(hc.overrides.task), hc.job.override_dirname)
        result = run_job(cfg, out, run_name, ctx)
    if result is None:  # a failed sweep point: logged, recorded, the sweep goes on
        return None
    if "pruned" in result:  # a search's pruner stopped it: not a failure
        log.info("%s pruned", run_name)
        return None
    log.info("outputs in %s", out)
    return result["val_accuracy"]  # what a sweeper optimises: never the test accuracy


if __name__ == "__main__":
    main()
