"""What every stage's command line does: check the config, quiet TensorFlow's start-up, load the
prepared data, run the stage inside its MLflow run, and report errors as one line."""

from collections.abc import Callable
from typing import Any

import numpy as np
from omegaconf import DictConfig

from src.config import select_params, validate
from src.runtime import quiet_tensorflow, user_errors


def run_stage(
    cfg: DictConfig,
    stage: str,
    params: list[str],
    run: Callable[[DictConfig, dict[str, np.ndarray] | None], Any],
    reads_prepared: bool = True,
) -> None:
    """`run(cfg, arrays)` for the checked config, with paths.prepared's arrays (or None)."""
    with user_errors():
        cfg = validate(cfg)
        quiet_tensorflow()
        from src import data, files, tracking

        tags, arrays = {"stage": stage}, None
        if reads_prepared:
            arrays = data.load(cfg.paths.prepared)
            tags["data_hash"] = files.file_md5(cfg.paths.prepared)
        with tracking.start_run(cfg, stage, select_params(cfg, params), tags):
            run(cfg, arrays)
