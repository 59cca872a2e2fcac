"""Hydra callback for `python -m src.train ... -m`: one parent MLflow run per sweep, a summary
(CSV, heatmap, accuracy-vs-bottleneck plot, terminal table) and the champion model."""

import atexit
import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.files import atomic_path

log = logging.getLogger(__name__)

COLUMNS = [
    "point",
    "bottleneck",
    "dropout",
    "seed",
    "status",
    "val_accuracy",
    "test_accuracy",
    "test_loss",
    "test_reconstruction_mse",
    "train_seconds",
    "run_id",
    "autoencoder_run_id",
    "error",
]


def is_swept(override: str) -> bool:
    """Whether a command-line override takes several values: a=1,2 or a=range(...)/choice(...)."""
    value = override.split("=", 1)[-1]
    return value.startswith(("range(", "choice(", "glob(")) or (
        "," in value and not value.startswith(("[", "{"))
    )


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder of the sweep, from its result.json (missing: the job crashed)."""
    rows = []
    jobs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    for job in sorted(jobs, key=lambda p: int(p.name) if p.name.isdigit() else p.name):
        overrides = yaml.safe_load((job / ".hydra/overrides.yaml").read_text()) or []
        row = {"point": ",".join(overrides) or job.name}
        if (job / "result.json").is_file():
            row.update(json.loads((job / "result.json").read_text()))
        else:  # the job died before writing its result
            row.update(status="FAILED", error="no result")
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def table(rows: list[dict[str, Any]]) -> str:
    """A short fixed-width table for the terminal."""
    lines = [
        f"{'bottleneck':>10} {'dropout':>7} {'seed':>5} {'val acc':>8} {'test acc':>8} "
        f"{'loss':>7} {'recon mse':>9} {'seconds':>7}  status"
    ]
    for r in rows:
        if r["status"] == "FINISHED":
            lines.append(
                f"{r['bottleneck']:>10} {r['dropout']:>7} {r['seed']:>5} "
                f"{r['val_accuracy']:>8.4f} {r['test_accuracy']:>8.4f} {r['test_loss']:>7.4f} "
                f"{r['test_reconstruction_mse']:>9.5f} {r['train_seconds']:>7.1f}  FINISHED"
            )
        else:
            lines.append(f"{r.get('point')}: FAILED ({r.get('error')})")
    return "\n".join(lines)


def register_champion(rows: list[dict[str, Any]], model_name: str) -> dict[str, Any] | None:
    """Register the classifier of the point with the best validation accuracy (never chosen on
    test accuracy) in the Model Registry with the alias `champion`."""
    import mlflow
    from mlflow import MlflowClient

    done = [r for r in rows if r["status"] == "FINISHED" and r.get("run_id")]
    if not done:
        return None
    best = max(done, key=lambda r: r["val_accuracy"])
    client = MlflowClient()
    run = client.get_run(best["run_id"])
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{best['run_id']}' AND name = 'classifier'",
    )
    if not models:
        log.warning("no logged classifier for run %s; no champion registered", best["run_id"])
        return None
    version = mlflow.register_model(models[0].model_uri, model_name)
    client.set_registered_model_alias(model_name, "champion", version.version)
    client.set_tag(best["run_id"], "champion", "true")
    log.info(
        "champion: %s (validation accuracy %.4f; test %.4f) registered as %s version %s, "
        "alias champion",
        best["point"],
        best["val_accuracy"],
        best["test_accuracy"],
        model_name,
        version.version,
    )
    return best


class SweepCallback(Callback):
    """Parent run at multirun start; summary, champion and final status at multirun end."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from src import tracking

        self.sweep_dir = Path(config.hydra.sweep.dir)
        swept = [o.split("=", 1)[0] for o in config.hydra.overrides.task if is_swept(o)]
        os.environ[tracking.SWEPT_KEYS_ENV] = ",".join(swept)
        if not config.mlflow.enabled:
            return
        from mlflow import MlflowClient

        tracking.setup(config)  # creates the store and experiment once, before any job starts
        client = MlflowClient()
        experiment = client.get_experiment_by_name(config.mlflow.experiment_name)
        name = " ".join(config.hydra.overrides.task) or "sweep"
        run = client.create_run(
            experiment.experiment_id,
            run_name=name,
            tags={"sweep": "parent", "sweep_dir": str(self.sweep_dir)},
        )
        self.parent_run_id = run.info.run_id
        for override in config.hydra.overrides.task:  # the sweep's grid and fixed settings
            key, _, value = override.partition("=")
            client.log_param(self.parent_run_id, key.lstrip("+~"), value)
        os.environ[tracking.PARENT_RUN_ENV] = self.parent_run_id
        atexit.register(self.end_unfinished)  # Ctrl-C or SIGTERM: on_multirun_end never comes
        log.info("sweep parent run %s (%s)", self.parent_run_id, name)

    def end_unfinished(self) -> None:
        """At exit, a parent run the sweep did not finish (it was interrupted) ends KILLED."""
        if self.parent_run_id is None:
            return
        from mlflow import MlflowClient

        from src import tracking

        client = MlflowClient()
        client.set_tag(self.parent_run_id, "error", "interrupted before every point ran")
        client.set_terminated(self.parent_run_id, "KILLED")
        self.parent_run_id = None
        os.environ.pop(tracking.PARENT_RUN_ENV, None)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_dir is None:
            return
        from src import plots

        rows = collect(self.sweep_dir)
        write_csv(rows, self.sweep_dir / "summary.csv")
        done = [r for r in rows if r["status"] == "FINISHED"]
        if done:
            plots.sweep_heatmap(done, self.sweep_dir / "accuracy_heatmap.png")
            plots.sweep_lines(done, self.sweep_dir / "accuracy_vs_bottleneck.png")
        log.info("sweep summary (%s):\n%s", self.sweep_dir / "summary.csv", table(rows))
        failed = [r for r in rows if r["status"] != "FINISHED"]
        if self.parent_run_id:
            self._finish_parent(config, rows, failed)
        if failed:
            points = "; ".join(f"{r['point']} ({r.get('error')})" for r in failed)
            raise SystemExit(f"error: {len(failed)} of {len(rows)} sweep points failed: {points}")

    def _finish_parent(self, config: DictConfig, rows: list, failed: list) -> None:
        from mlflow import MlflowClient

        from src import tracking

        client = MlflowClient()
        run_id, self.parent_run_id = self.parent_run_id, None  # finished here, not at exit
        try:
            for name in ("summary.csv", "accuracy_heatmap.png", "accuracy_vs_bottleneck.png"):
                if (self.sweep_dir / name).is_file():
                    client.log_artifact(run_id, str(self.sweep_dir / name), "summary")
            best = register_champion(rows, config.mlflow.registered_model_name)
            if best:  # chosen on validation; its test accuracy is reported, not used
                client.set_tag(run_id, "champion_run_id", best["run_id"])
                client.log_metric(run_id, "champion_val_accuracy", best["val_accuracy"])
                client.log_metric(run_id, "champion_test_accuracy", best["test_accuracy"])
        finally:
            client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
            os.environ.pop(tracking.PARENT_RUN_ENV, None)
