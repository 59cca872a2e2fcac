"""The sweep's parent MLflow run: created or resumed at the start, finished once at the end
(summary files, the best point, the paired test, the champion), KILLED when interrupted."""

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from src.config import flatten
from src.sweeps import champion, summary
from src.sweeps.study import is_search

log = logging.getLogger(__name__)
SUMMARY_FILES = ("summary.csv", "points.csv", "accuracy_heatmap.png",
                 "accuracy_vs_bottleneck.png", "label_budget.csv", "label_budget.png")  # fmt: skip


def create(client: Any, experiment_id: str, config: DictConfig, key: str) -> str:
    """A new parent run named by what the sweep varies and fixes: the command's overrides,
    then hydra.sweeper.params not on the command line (a preset's grid, a search's space)."""
    overrides = list(config.hydra.overrides.task)
    given = {k.lstrip("+~"): v for k, _, v in (o.partition("=") for o in overrides)}
    space = {k: str(v) for k, v in flatten(config.hydra.sweeper.get("params") or {}).items()}
    name = " ".join([*overrides, *(f"{k}={v}" for k, v in space.items() if k not in given)])
    run = client.create_run(experiment_id, run_name=name or "sweep",
                            tags={"sweep": "parent", "sweep_dir": str(config.hydra.sweep.dir),
                                  "sweep_key": key})  # fmt: skip
    params = given if is_search(config) else {**space, **given}  # a search logs its space
    for k, value in params.items():  # as a tag (optuna_space), its trials' values as params
        client.log_param(run.info.run_id, k, value)
    log.info("sweep parent run %s (%s)", run.info.run_id, run.info.run_name)
    return run.info.run_id


def unfinished(client: Any, experiment_id: str, key: str) -> str | None:
    """The latest parent run of the sweep `key` if it did not finish (KILLED, FAILED, or
    RUNNING after kill -9)."""
    runs = client.search_runs([experiment_id],
                              f"tags.sweep = 'parent' AND tags.sweep_key = '{key}'",
                              order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    return runs[0].info.run_id if runs and runs[0].info.status != "FINISHED" else None


def reopen(client: Any, experiment_id: str, run_id: str, sweep_dir: Path) -> str:
    """Resume a parent run: RUNNING again; children a kill -9 left RUNNING end KILLED."""
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "sweep_dir", str(sweep_dir))
    dead = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{run_id}' AND "
                              "attributes.status = 'RUNNING'")  # fmt: skip
    for child in dead:
        client.set_terminated(child.info.run_id, "KILLED")
    log.info("resuming sweep parent run %s: its FINISHED points are reused, the others run; "
             "sweep.resume=false starts afresh", run_id)  # fmt: skip
    return run_id


def kill(client: Any, run_id: str) -> None:
    """A parent run whose sweep was interrupted before every point ran ends KILLED."""
    client.set_tag(run_id, "error", "interrupted before every point ran")
    client.set_terminated(run_id, "KILLED")


def log_best(client: Any, run_id: str, points: list, comparison: dict | None, keys: list) -> None:
    """The best point (mean validation accuracy) with its intervals, and the paired test."""
    top = points[0]
    client.set_tag(run_id, "best_point", summary.point_label(top, keys))
    for key, value in top.items():
        if key.endswith(("_mean", "_ci_low", "_ci_high")) and not math.isnan(value):
            client.log_metric(run_id, f"best_{key}", value)
    client.log_metric(run_id, "best_n_seeds", top["n"])
    columns = summary.with_keys(summary.POINT_COLUMNS, keys)
    client.log_table(run_id, {c: [p[c] for p in points] for c in columns}, "summary/points.json")
    if comparison:
        line = summary.comparison_line(points, comparison, keys)
        client.set_tag(run_id, "best_vs_runner_up", line)
        if not math.isnan(comparison["p_value"]):
            client.log_metric(run_id, "best_vs_runner_up_p_value", comparison["p_value"])


@dataclass
class Outcome:
    """A sweep at its end, as the callback summarised it."""

    sweep_dir: Path
    rows: list[dict[str, Any]]
    keys: list[str]
    points: list[dict[str, Any]]
    comparison: dict[str, Any] | None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] not in ("FINISHED", "PRUNED")]


def finish(client: Any, run_id: str, done: Outcome, model_name: str,
           extras: Callable[[Any, str], None]) -> None:  # fmt: skip
    """Log the sweep's summary (and the study's `extras`) on its parent and end it FINISHED, or
    FAILED if a point failed."""
    try:
        extras(client, run_id)
        for name in SUMMARY_FILES:
            if (done.sweep_dir / name).is_file():
                client.log_artifact(run_id, str(done.sweep_dir / name), "summary")
        if done.points:
            log_best(client, run_id, done.points, done.comparison, done.keys)
        best = champion.register(done.rows, done.points, model_name, done.keys)
        if best:  # chosen on validation; its test accuracy is reported, not used
            client.set_tag(run_id, "champion_run_id", best["run_id"])
            client.log_metric(run_id, "champion_val_accuracy", best["val_accuracy"])
            client.log_metric(run_id, "champion_test_accuracy", best["test_accuracy"])
    finally:
        client.set_terminated(run_id, "FAILED" if done.failed else "FINISHED")
