"""Stage 1: load the dataset, check it, split train/val/test, scale to [0, 1], save the arrays."""

import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from src import cli

log = logging.getLogger(__name__)

PARAMS = ["dataset", "seed"]  # the config keys this stage reads; dvc.yaml lists the same


def run(cfg: DictConfig, out: Path = Path(".")) -> dict[str, np.ndarray]:
    """Prepare cfg.dataset and write the arrays to paths.prepared under `out`."""
    from src import data, files, tracking

    d = cfg.dataset
    arrays = data.prepare(d.name, d.test_size, d.val_size, cfg.seed, d.path, d.class_names)
    with files.outputs(out, [cfg.paths.prepared]) as staged:
        data.save(arrays, staged(cfg.paths.prepared))
        tracking.set_tags({"data_hash": files.file_md5(staged(cfg.paths.prepared))})
    tracking.log_metrics({f"n_{s}": len(arrays[f"y_{s}"]) for s in data.SPLITS})
    log.info("wrote %s", out / cfg.paths.prepared)
    return arrays


@cli.checked_choices
@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    cli.run_stage(cfg, "prepare", PARAMS, lambda cfg, _: run(cfg), False, check_dataset)


def check_dataset(cfg: DictConfig) -> None:
    """Before TensorFlow loads: a dataset to download on a machine offline is one line at once."""
    from src import data

    data.check_download(cfg.dataset.name, cfg.dataset.path)


if __name__ == "__main__":
    main()
