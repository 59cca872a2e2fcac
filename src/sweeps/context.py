"""What a sweep's driver tells its jobs, as one file in the sweep folder: every job of a
multirun (in this process, a joblib worker or a Slurm node) finds it under hydra.sweep.dir."""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from src.files import write_json

FILE = "context.json"


@dataclass(frozen=True)
class SweepContext:
    """The parent MLflow run (None: tracking off), the keys the sweep varies (its child runs'
    names), whether a job reuses a FINISHED run of the same point (a grid's resume), the Optuna
    study a job is a trial of (None for a grid), and for progress lines the number of points
    (a search's n_trials) and when the sweep started (time.time())."""

    parent_run_id: str | None = None
    swept: list[str] = field(default_factory=list)
    resume: bool = False
    study: str | None = None
    storage: str | None = None
    total: int = 0
    started: float | None = None

    def save(self, sweep_dir: str | Path) -> None:
        write_json(Path(sweep_dir) / FILE, dataclasses.asdict(self))

    @classmethod
    def load(cls, sweep_dir: str | Path) -> "SweepContext | None":
        path = Path(sweep_dir) / FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def current() -> SweepContext | None:
    """The context of this Hydra job's sweep; None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return SweepContext.load(HydraConfig.get().sweep.dir)
