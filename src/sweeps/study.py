"""A sweep's study: what identifies it, how it gets its parent MLflow run, its rows (one per run)
and what it alone logs. GridStudy is a sweep of Hydra's basic sweeper over job folders;
OptunaStudy (src.sweeps.optuna_study) is a search, shared by every worker on its storage."""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from src.config import config_hash, flatten
from src.sweeps.context import SweepContext


def is_search(config: DictConfig) -> bool:
    """Whether a multirun searches with Optuna (hydra/sweeper=optuna): the one place that asks."""
    return config.hydra.runtime.choices.get("hydra/sweeper") == "optuna"


def parse(overrides: list[str]) -> list[Any]:
    """Overrides as Hydra's own parser reads them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies, as Hydra's parser tells sweeps (a=1,2, range(...), ...) from
    values; then hydra.sweeper.params (a preset's grid, a search's space) unless the command
    line fixes the key."""
    task = parse(config.hydra.overrides.task)
    keys = [o.key_or_group for o in task if o.is_sweep_override()]
    fixed = {o.key_or_group for o in task if not o.is_sweep_override()}
    keys += [k for k in flatten(config.hydra.sweeper.get("params") or {})
             if k not in keys and k not in fixed]  # fmt: skip
    return [k for k in keys if not k.startswith("hydra.")]


def job_result(job_dir: str | Path) -> dict[str, Any] | None:
    """A job's result.json (src.train writes it whatever happened); None if it died first."""
    path = Path(job_dir) / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


class Study:
    """What every study has: its config and sweep folder, and what it hands its jobs."""

    heatmaps = True  # the bottleneck x dropout figures (a search has Optuna's plots instead)

    def __init__(self, config: DictConfig) -> None:
        self.config = config
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def log_extras(self, client: Any, run_id: str) -> None:
        """What only this kind of study logs on its parent run: nothing for a grid."""

    def claim_finish(self, run_id: str) -> bool:
        """Whether this process finishes the parent run: a grid has one driver."""
        return True

    def check(self) -> None:
        """What can be checked before TensorFlow loads and the parent run is made."""


class GridStudy(Study):
    """A grid sweep: the command's overrides identify it; its rows are its job folders."""

    def context(self, parent_run_id: str | None) -> SweepContext:
        return SweepContext(parent_run_id, swept_keys(self.config), bool(self.config.sweep.resume),
                            total=self.total(), started=time.time())  # fmt: skip

    def jobs(self) -> list[list[str]]:
        """The overrides of each job Hydra's basic sweeper makes of the preset's grid and the
        command line."""
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        grid = [f"{k}={v}" for k, v in (self.config.hydra.sweeper.get("params") or {}).items()]
        batches = BasicSweeper.split_arguments(parse([*grid, *self.config.hydra.overrides.task]),
                                               None)  # fmt: skip
        return [list(job) for batch in batches for job in batch]

    def total(self) -> int:
        return len(self.jobs())

    def check(self) -> None:
        """The first job's config composed as Hydra's launcher will: a swept key the config
        lacks (`bottlenek=8,32`) is one `error:` line before TensorFlow and the parent run."""
        from hydra.core.global_hydra import GlobalHydra
        from hydra.errors import CompactHydraException

        from src.cli import composition_error

        jobs = self.jobs()
        if not jobs or not GlobalHydra.instance().is_initialized():
            return
        try:
            GlobalHydra.instance().config_loader().load_sweep_config(self.config, jobs[0])
        except CompactHydraException as e:
            overrides = list(self.config.hydra.overrides.task)
            raise SystemExit(f"error: {composition_error(e, overrides)}") from None

    def key(self) -> str:
        """The parent run's `sweep_key` tag: overrides (in any order) and sweeper."""
        identity = {"overrides": sorted(self.config.hydra.overrides.task),
                    "sweeper": self.config.hydra.runtime.choices.get("hydra/sweeper")}  # fmt: skip
        return config_hash(OmegaConf.create(identity))

    def parent_run(self, client: Any, experiment_id: str, create: Callable[[], str]) -> str:
        """The sweep's latest parent if it did not finish (and sweep.resume), else a new one."""
        from src.sweeps import parent

        resumed = parent.unfinished(client, experiment_id, self.key())
        if resumed and self.config.sweep.resume:
            return parent.reopen(client, experiment_id, resumed, self.sweep_dir)
        return create()

    def rows(self) -> list[dict[str, Any]]:
        """One row per job folder: its overrides' values and its result.json."""
        rows = []
        jobs = [p.parent.parent for p in self.sweep_dir.glob("*/.hydra/overrides.yaml")]
        for job in sorted(jobs, key=lambda p: int(p.name) if p.name.isdigit() else p.name):
            overrides = yaml.safe_load((job / ".hydra/overrides.yaml").read_text()) or []
            row = {"point": ",".join(overrides) or job.name,
                   **{o.key_or_group: o.value() for o in parse(overrides)}}  # fmt: skip
            row.update(job_result(job) or {"status": "FAILED", "error": "no result"})
            rows.append(row)
        return rows


def finished_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """The result.json of every job of a grid sweep that has ended (one running has none)."""
    jobs = (p for p in Path(sweep_dir).glob("*") if p.is_dir())
    return [r for job in jobs if (r := job_result(job)) is not None]


def open_study(config: DictConfig) -> Study:
    if is_search(config):
        from src.sweeps.optuna_study import OptunaStudy

        return OptunaStudy(config)
    return GridStudy(config)
