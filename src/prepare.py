"""Stage 1: load the dataset, check it, split train/val/test, scale to [0, 1], save the arrays."""

import logging

import hydra
from omegaconf import DictConfig

from src.config import file_md5, select_params, user_errors, validate

log = logging.getLogger(__name__)

PARAMS = ["dataset", "seed"]  # the config keys this stage reads; dvc.yaml lists the same


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        validate(cfg)
        from src import data, tracking

        with tracking.start_run(cfg, "prepare", select_params(cfg, PARAMS), {"stage": "prepare"}):
            d = cfg.dataset
            arrays = data.prepare(d.name, d.test_size, d.val_size, cfg.seed, d.path, d.class_names)
            data.save(arrays, cfg.paths.prepared)
            tracking.set_tags({"data_hash": file_md5(cfg.paths.prepared)})
            tracking.log_metrics({f"n_{s}": len(arrays[f"y_{s}"]) for s in data.SPLITS})
            log.info("wrote %s", cfg.paths.prepared)


if __name__ == "__main__":
    main()
