"""The whole experiment for one config in one process: prepare (cached) -> pretrain -> classify
-> evaluate, written into Hydra's job output folder so that `-m` sweeps never collide."""

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from src.config import config_hash, file_md5, select_params, user_errors, validate

log = logging.getLogger(__name__)

PARAMS = ["dataset", "model", "bottleneck", "dropout", "seed", "pretrain", "classify"]


def prepared_data(cfg: DictConfig) -> tuple[dict, Path]:
    """Prepared arrays for cfg.dataset and cfg.seed, cached under paths.cache by their config."""
    from src import data

    key = config_hash(OmegaConf.create({"dataset": cfg.dataset, "seed": cfg.seed}))
    path = Path(cfg.paths.cache) / f"prepared-{cfg.dataset.name}-{key}.npz"
    if not path.is_file():
        d = cfg.dataset
        arrays = data.prepare(d.name, d.test_size, d.val_size, cfg.seed, d.path, d.class_names)
        data.save(arrays, path)
    return data.load(path), path


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    with user_errors():
        validate(cfg)
        from src import classify, evaluate, pretrain, tracking

        hc = HydraConfig.get()
        out = Path(hc.runtime.output_dir)
        arrays, data_path = prepared_data(cfg)
        tags = {"stage": "train", "data_hash": file_md5(data_path), "output_dir": str(out)}
        run_name = hc.job.override_dirname or "train"
        with tracking.start_run(cfg, run_name, select_params(cfg, PARAMS), tags):
            pretrain.run(cfg, arrays, out)
            classify.run(cfg, arrays, out)
            metrics = evaluate.run(cfg, arrays, out)
        log.info("outputs in %s", out)
        return metrics["test_accuracy"]


if __name__ == "__main__":
    main()
