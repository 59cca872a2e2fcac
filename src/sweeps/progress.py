"""One line per finished point of a sweep or trial of a search, from whichever process ran it:
`[3/12] bottleneck=8 dropout=0.5 seed=1  val 0.9620  best 0.9710 (b32-d0.0-s1)  41 s  ~6 min
left`; the parent run's metric `points_done` counts along."""

import logging
import time
from pathlib import Path

from src.runtime import first_line
from src.sweeps.context import SweepContext
from src.sweeps.job import trial_number
from src.sweeps.study import finished_jobs, job_result
from src.sweeps.summary import short_number

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """41 s, 6 min, 2.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def line(done: list[dict], total: int, point: str, result: dict, left: float | None) -> str:
    """The progress line of `result` (the point just finished), `done` all finished so far."""
    finished = [r for r in done if r["status"] == "FINISHED"]
    best = max(finished, key=lambda r: r["val_accuracy"], default=None)
    outcome = (f"val {result['val_accuracy']:.4f}" if result["status"] == "FINISHED"
               else result["status"])  # fmt: skip
    parts = [f"[{len(done)}/{total}] {point}", outcome]
    if best is not None:
        parts.append(f"best {best['val_accuracy']:.4f} ({best.get('run_name', best['seed'])})")
    if "train_seconds" in result:
        parts.append(duration(result["train_seconds"]))
    if left is not None:
        parts.append(f"~{duration(left)} left" if left > 0 else "last point")
    return "  ".join(parts)


def finished(ctx: SweepContext, sweep_dir: Path) -> list[dict]:
    """The results so far: a search's from its study (every worker's), a grid's from its jobs."""
    if ctx.study is None:
        return finished_jobs(sweep_dir)
    from src.sweeps.optuna_study import told_results

    return told_results(ctx.storage, ctx.study)


def report(ctx: SweepContext, sweep_dir: Path, job_dir: Path, overrides: list[str]) -> None:
    """Log the progress line of the job in `job_dir`; count it on the parent run."""
    result = job_result(job_dir)
    if result is None:  # died before writing it: the sweep's summary reports it
        return
    try:
        done = finished(ctx, sweep_dir)
    except Exception as e:  # e.g. the study's database away: the line without the others
        log.warning("progress: the other points' results not read: %s", first_line(e))
        done = []
    if result not in done:  # a search's trial is told to its study after this
        done.append(result)
    total = max(ctx.total, len(done))
    swept = [o.split("=", 1) for o in overrides if o.split("=", 1)[0] in ctx.swept]
    point = " ".join(f"{k}={short_number(v)}" for k, v in swept) or job_dir.name
    if (trial := trial_number(ctx)) is not None:
        point = f"trial {trial}: {point}"
    elapsed = time.time() - ctx.started if ctx.started else None
    left = elapsed / len(done) * (total - len(done)) if elapsed is not None else None
    log.info("%s", line(done, total, point, result, left))
    if ctx.parent_run_id:
        log_count(ctx.parent_run_id, len(done))


def log_count(run_id: str, done: int) -> None:
    """The parent run's metric points_done, one step per finished point."""
    from mlflow import MlflowClient

    try:
        MlflowClient().log_metric(run_id, "points_done", done, step=done)
    except Exception as e:  # progress is not worth failing a point for
        log.warning("points_done not logged on run %s: %s", run_id, e)
