"""What every stage's command line does: check the config, quiet TensorFlow's start-up, load the
prepared data, run the stage inside its MLflow run, and report errors as one line."""

import argparse
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from src.config import select_params, validate
from src.runtime import UserError, first_line, quiet_tensorflow, user_errors

CONF = Path(__file__).resolve().parent.parent / "conf"  # what hydra.main's "../conf" names


def run_stage(
    cfg: DictConfig,
    stage: str,
    params: list[str],
    run: Callable[[DictConfig, dict[str, np.ndarray] | None], Any],
    reads_prepared: bool = True,
    check: Callable[[DictConfig], None] | None = None,
) -> None:
    """`run(cfg, arrays)` for the checked config, with paths.prepared's arrays (or None);
    `check(cfg)` first, before TensorFlow loads, for what the stage alone can tell quickly."""
    with user_errors():
        cfg = validate(cfg)
        if check:
            check(cfg)
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
    (`experiment=nonexistent`) stops it with one `error:` line before Hydra composes, and so
    does what Hydra finds while composing (one_line_errors)."""

    @functools.wraps(main)
    def checked(*args: Any) -> Any:
        if not args:  # the command line, not a caller passing a config
            with user_errors():
                check_choices(command_line_overrides(sys.argv[1:]))
        return main(*args)

    return one_line_errors(checked)


def one_line_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Around a hydra.main: Hydra's errors while composing the config as one `error:` line."""

    @functools.wraps(main)
    def composed(*args: Any) -> Any:
        if args:  # a caller passing a config: Hydra composes nothing
            return main(*args)
        with composition_errors(command_line_overrides(sys.argv[1:])):
            return main()

    return composed


@contextmanager
def composition_errors(overrides: list[str]) -> Iterator[None]:
    """Hydra's own errors (a misspelt key, an override it cannot parse, an option of one of its
    own groups) as one `error:` line, composition_error, instead of its report of several.
    HYDRA_FULL_ERROR=1 makes Hydra raise them rather than report them; set by the user, it
    keeps Hydra's own report and traceback."""
    from hydra.errors import CompactHydraException

    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except CompactHydraException as e:
        raise SystemExit(f"error: {composition_error(e, overrides)}") from None
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def composition_error(error: Exception, overrides: list[str]) -> str:
    """The line for an error of Hydra's: a key the config lacks with the keys it has, an option
    its group lacks with the options, an override it cannot read; else its message."""
    from hydra.errors import MissingConfigException, OverrideParseException

    cause = error.__cause__
    if isinstance(error, OverrideParseException):
        return (f"{error.override} cannot be read ({first_line(error)}): see "
                "https://hydra.cc/docs/advanced/override_grammar/basic/")  # fmt: skip
    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, choice = error.missing_cfg_file.rpartition("/")
        options = ", ".join(error.options)
        return f"{group}={choice} is not allowed: {group} must be one of {options}"
    if "not in struct" in str(cause) and getattr(cause, "parent_node", None) is not None:
        return unknown_key(str(cause.full_key), list(cause.parent_node.keys()), overrides)
    return " ".join(str(error).split())


def unknown_key(full_key: str, siblings: list[str], overrides: list[str]) -> str:
    """`pretrain.foo=3 is not allowed: pretrain has no key foo; its keys are epochs, ...`, or the
    key meant when one is close (`bottlenek`: did you mean bottleneck?)."""
    import difflib

    parent, _, key = full_key.rpartition(".")
    given = next((o for o in overrides if o.lstrip("+~").split("=", 1)[0] == full_key), full_key)
    keys = [k for k in siblings if k != "hydra"]
    close = difflib.get_close_matches(key, keys, n=1)
    hint = (f"did you mean {'.'.join(filter(None, [parent, close[0]]))}?" if close
            else f"its keys are {', '.join(keys)}")  # fmt: skip
    return f"{given} is not allowed: {parent or 'the config'} has no key {key}; {hint}"


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
