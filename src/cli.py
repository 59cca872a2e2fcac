"""What every stage's command line does: check the config, quiet TensorFlow's start-up, load the
prepared data, run the stage inside its MLflow run, and report errors as one line."""

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from src.config import select_params, validate
from src.runtime import UserError, quiet_tensorflow, user_errors

CONF = Path(__file__).resolve().parent.parent / "conf"  # what hydra.main's "../conf" names


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


def checked_choices(main: Callable[..., Any]) -> Callable[..., Any]:
    """Around a hydra.main on conf/: an unknown option of a config group on the command line
    (`experiment=nonexistent`) stops it with one `error:` line before Hydra composes."""

    @functools.wraps(main)
    def checked(*args: Any) -> Any:
        if not args:  # the command line, not a caller passing a config
            with user_errors():
                check_choices(command_line_overrides(sys.argv[1:]))
        return main(*args)

    return checked


def command_line_overrides(argv: list[str]) -> list[str]:
    """The overrides of a Hydra command line, read as hydra.main reads it; none when it names
    other config folders (--config-path, --config-dir) or is not valid (Hydra says why)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        args, _ = parser.parse_known_args(argv)
    except argparse.ArgumentError:
        return []
    if args.config_path or args.config_dir or args.shell_completion:
        return []
    return args.overrides


def group_choices(override: Any, conf: Path = CONF) -> list[str]:
    """The options of a group in `conf` that an override chooses: ["foo"] for `model=foo`, both
    of a sweep `model=dense,foo`; [] for other keys, null, deletions and Hydra's own groups."""
    from hydra.core.override_parser.types import ChoiceSweep

    group = override.key_or_group
    if override.is_delete() or group.split("/")[0] == "hydra" or not (conf / group).is_dir():
        return []
    value = override.value()
    values = value.list if isinstance(value, ChoiceSweep) else [value]
    return [str(v) for v in values if isinstance(v, str | int) and not isinstance(v, bool)]


def check_choices(overrides: list[str], conf: Path = CONF) -> None:
    """Raise UserError for an override that chooses an option its conf/ group lacks, naming
    the options (the group's .yaml files). Overrides Hydra cannot parse are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return
    for override in parsed:
        group = override.key_or_group
        for choice in group_choices(override, conf):
            if not (conf / group / f"{choice}.yaml").is_file():
                options = ", ".join(sorted(p.stem for p in (conf / group).glob("*.yaml")))
                raise UserError(
                    f"{group}={choice} is not allowed: {group} must be one of {options} "
                    f"(conf/{group}/)"
                )
