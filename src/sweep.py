"""Hydra callback for `python -m src.train ... -m`: one parent MLflow run per sweep, a summary
(CSV, heatmap, accuracy-vs-bottleneck plot, terminal table) and the champion model."""

import atexit
import contextlib
import csv
import functools
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src import stats
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
    "scratch_test_accuracy",
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


POINT_COLUMNS = [
    "bottleneck",
    "dropout",
    "n",
    "seeds",
    *(f"{m}_{s}" for m in stats.METRICS for s in ("mean", "ci_low", "ci_high")),
]


def write_csv(rows: list[dict[str, Any]], path: Path, columns: list[str] = COLUMNS) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def short_number(value: str) -> str:
    """A float with many digits (a search's sample) to 3 significant ones; the rest as is."""
    try:
        return f"{float(value):.3g}" if len(value) > 6 else value
    except ValueError:
        return value


def table(rows: list[dict[str, Any]]) -> str:
    """A short fixed-width table of the runs for the terminal."""
    lines = [
        f"{'bottleneck':>10} {'dropout':>7} {'seed':>5} {'val acc':>8} {'test acc':>8} "
        f"{'loss':>7} {'recon mse':>9} {'seconds':>7}  status"
    ]
    for r in rows:
        if r["status"] == "FINISHED":
            lines.append(
                f"{r['bottleneck']:>10} {short_number(str(r['dropout'])):>7} {r['seed']:>5} "
                f"{r['val_accuracy']:>8.4f} {r['test_accuracy']:>8.4f} {r['test_loss']:>7.4f} "
                f"{r['test_reconstruction_mse']:>9.5f} {r['train_seconds']:>7.1f}  FINISHED"
            )
        else:
            lines.append(f"{r.get('point')}: {r['status']} ({r.get('error')})")
    return "\n".join(lines)


def _mean_ci(p: dict[str, Any], m: str) -> str:
    if math.isnan(p[f"{m}_ci_low"]):
        return f"{p[f'{m}_mean']:.4f}{'':>18}"
    return f"{p[f'{m}_mean']:.4f} [{p[f'{m}_ci_low']:.4f}, {p[f'{m}_ci_high']:.4f}]"


def points_table(points: list[dict[str, Any]], comparison: dict[str, Any] | None) -> str:
    """Per point over seeds: n, mean and 95 % CI; the best point (mean validation accuracy)
    marked; then the paired comparison with the runner-up, or why there is none."""
    lines = [f"  {'bottleneck':>10} {'dropout':>7} {'n':>3}  {'val acc [95 % CI]':<33} "
             "test acc [95 % CI]"]  # fmt: skip
    for i, p in enumerate(points):
        lines.append(
            f"{'*' if i == 0 else ' '} {p['bottleneck']:>10} {short_number(str(p['dropout'])):>7} "
            f"{p['n']:>3}  "
            f"{_mean_ci(p, 'val_accuracy'):<33} {_mean_ci(p, 'test_accuracy')}"
        )
    lines.append("* best point: highest mean validation accuracy (test accuracy is not used)")
    lines.append(comparison_line(points, comparison))
    return "\n".join(lines)


def comparison_line(points: list[dict[str, Any]], comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return "one point: nothing to compare"
    best, other = points[0], points[1]
    if comparison["n"] < 2:
        return (
            "one seed per point: no confidence interval or paired test possible; repeat "
            "over seeds (e.g. seed=0,1,2) to tell points apart"
        )
    p = comparison["p_value"]
    return (
        f"best (bottleneck={best['bottleneck']}, dropout={best['dropout']}) vs runner-up "
        f"(bottleneck={other['bottleneck']}, dropout={other['dropout']}) on {comparison['n']} "
        f"paired seeds: test accuracy {comparison['difference']:+.4f}, paired t-test "
        + ("p not defined (equal differences)" if math.isnan(p) else f"p = {p:.3g}")
    )


def summarize(rows: list[dict[str, Any]]) -> tuple[list[dict], dict | None]:
    """(points over seeds, best first; paired test-accuracy comparison of best vs runner-up)."""
    points = stats.by_point(rows)
    if len(points) < 2:
        return points, None
    return points, stats.paired_comparison(rows, points[0], points[1], "test_accuracy")


def _champion_stays(client: Any, model_name: str, best: dict[str, Any]) -> str | None:
    """Why the current champion keeps its alias against `best`, or None if it moves."""
    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except Exception:  # no registered model or no alias yet
        return None
    run = client.get_run(version.run_id)
    data_hash = run.data.tags.get("data_hash")
    val = run.data.metrics.get("val_accuracy")
    if version.run_id == best["run_id"]:
        return f"version {version.version} is this sweep's best run already"
    if data_hash != best.get("data_hash"):
        return (f"version {version.version} was validated on other prepared data (data hash "
                f"{str(data_hash)[:12]}, this sweep's {str(best.get('data_hash'))[:12]}): the "
                f"accuracies are not comparable; delete the alias to replace it")  # fmt: skip
    if val is not None and best["val_accuracy"] <= val:
        return (f"version {version.version} has validation accuracy {val:.4f}, not beaten by "
                f"{best['point']} ({best['val_accuracy']:.4f}) on the same data")  # fmt: skip
    return None


def register_champion(
    rows: list[dict[str, Any]], points: list[dict[str, Any]], model_name: str
) -> dict[str, Any] | None:
    """Register the best run of the best point (both chosen on validation accuracy, never on
    test accuracy) as `model_name` with the alias `champion`, if it beats the current champion
    on the same prepared data; otherwise log why the alias stays. Returns the run moved to."""
    import mlflow
    from mlflow import MlflowClient

    if not points:
        return None
    top = points[0]
    point = (top["bottleneck"], top["dropout"])
    done = [
        r
        for r in rows
        if r["status"] == "FINISHED"
        and r.get("run_id")
        and (r["bottleneck"], r["dropout"]) == point
    ]
    if not done:
        return None
    best = max(done, key=lambda r: r["val_accuracy"])
    client = MlflowClient()
    if reason := _champion_stays(client, model_name, best):
        log.info("champion of %s stays: %s", model_name, reason)
        return None
    run = client.get_run(best["run_id"])
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{best['run_id']}' AND name = 'classifier'",
    )
    if not models:
        log.warning("no logged classifier for run %s; no champion registered", best["run_id"])
        return None
    with contextlib.suppress(Exception):  # the old champion's run loses its tag
        old = client.get_model_version_by_alias(model_name, "champion")
        client.delete_tag(old.run_id, "champion")
    version = mlflow.register_model(models[0].model_uri, model_name)
    client.set_registered_model_alias(model_name, "champion", version.version)
    client.update_model_version(
        model_name,
        version.version,
        description=(
            f"{best['point']} seed {best['seed']}: validation accuracy "
            f"{best['val_accuracy']:.4f}, test accuracy {best['test_accuracy']:.4f}; "
            f"point mean over {top['n']} seed(s): validation {top['val_accuracy_mean']:.4f}, "
            f"test {top['test_accuracy_mean']:.4f}; data hash {best.get('data_hash')}"
        ),
    )
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


def sweep_key(config: DictConfig) -> str:
    """A sweep's identity: its command-line overrides (in any order) and its sweeper."""
    from src.config import config_hash

    identity = {
        "overrides": sorted(config.hydra.overrides.task),
        "sweeper": config.hydra.runtime.choices.get("hydra/sweeper"),
    }
    return config_hash(OmegaConf.create(identity))


def unfinished_parent(client: Any, experiment_id: str, key: str) -> str | None:
    """The latest parent run of the sweep `key` that did not finish (interrupted: KILLED, or
    RUNNING after kill -9; FAILED: a point failed), if that is the latest one."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.sweep = 'parent' AND tags.sweep_key = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs and runs[0].info.status != "FINISHED" else None


class SweepCallback(Callback):
    """Parent run at multirun start; summary, champion and final status at multirun end."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from src import search, tracking

        self.sweep_dir = Path(config.hydra.sweep.dir)
        swept = [o.split("=", 1)[0] for o in config.hydra.overrides.task if is_swept(o)]
        if search.is_search(config):  # run names show the searched values too
            swept += list(search.flat_params(config.hydra.sweeper.params))
        os.environ[tracking.SWEPT_KEYS_ENV] = ",".join(swept)
        if not config.mlflow.enabled:
            return
        from mlflow import MlflowClient

        tracking.setup(config)  # creates the store and experiment once, before any job starts
        client = MlflowClient()
        experiment = client.get_experiment_by_name(config.mlflow.experiment_name)
        name = " ".join(config.hydra.overrides.task) or "sweep"
        searched = search.is_search(config)
        key = search.parent_key(config) if searched else sweep_key(config)
        resumed = None if searched else unfinished_parent(client, experiment.experiment_id, key)
        if searched:  # every worker of the study, and every run of its command, shares one
            create = functools.partial(
                self._create_parent, client, experiment.experiment_id, config, key
            )
            self.parent_run_id = search.parent_run(config, create)
            log.info("search parent run %s (%s)", self.parent_run_id, name)
        elif resumed and config.sweep.resume:
            self.parent_run_id = resumed
            client.update_run(resumed, status="RUNNING")
            client.set_tag(resumed, "sweep_dir", str(self.sweep_dir))
            for child in client.search_runs(  # left RUNNING by a kill -9: they died
                [experiment.experiment_id],
                f"tags.mlflow.parentRunId = '{resumed}' AND attributes.status = 'RUNNING'",
            ):
                client.set_terminated(child.info.run_id, "KILLED")
            log.info("resuming sweep parent run %s (%s): its FINISHED points are reused, the "
                     "others run; sweep.resume=false starts afresh", resumed, name)  # fmt: skip
        else:
            self.parent_run_id = self._create_parent(client, experiment.experiment_id, config, key)
            log.info("sweep parent run %s (%s)", self.parent_run_id, name)
        os.environ[tracking.PARENT_RUN_ENV] = self.parent_run_id
        atexit.register(self.end_unfinished)  # Ctrl-C or SIGTERM: on_multirun_end never comes

    def _create_parent(self, client: Any, experiment_id: str, config: DictConfig, key: str) -> str:
        """A new parent run: named by the sweep's overrides, with them as params."""
        run = client.create_run(
            experiment_id,
            run_name=" ".join(config.hydra.overrides.task) or "sweep",
            tags={"sweep": "parent", "sweep_dir": str(self.sweep_dir), "sweep_key": key},
        )
        for override in config.hydra.overrides.task:  # the sweep's grid and fixed settings
            k, _, value = override.partition("=")
            client.log_param(run.info.run_id, k.lstrip("+~"), value)
        return run.info.run_id

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
        from src import plots, search

        searched = search.is_search(config)  # rows of every trial of the study, all workers
        rows = search.rows(config) if searched else collect(self.sweep_dir)
        points, comparison = summarize(rows)
        write_csv(rows, self.sweep_dir / "summary.csv")
        write_csv(points, self.sweep_dir / "points.csv", POINT_COLUMNS)
        if points and not searched:  # a search has Optuna's plots instead
            plots.sweep_heatmap(points, self.sweep_dir / "accuracy_heatmap.png")
            plots.sweep_lines(points, self.sweep_dir / "accuracy_vs_bottleneck.png")
        log.info("sweep summary (%s):\n%s", self.sweep_dir / "summary.csv", table(rows))
        if points:
            log.info("points over seeds (%s):\n%s", self.sweep_dir / "points.csv",
                     points_table(points, comparison))  # fmt: skip
        failed = [r for r in rows if r["status"] not in ("FINISHED", "PRUNED")]
        if self.parent_run_id:
            self._finish_parent(config, rows, points, comparison, failed)
        if failed:
            points = "; ".join(f"{r['point']} ({r.get('error')})" for r in failed)
            raise SystemExit(f"error: {len(failed)} of {len(rows)} sweep points failed: {points}")

    def _finish_parent(
        self, config: DictConfig, rows: list, points: list, comparison: dict | None, failed: list
    ) -> None:
        from mlflow import MlflowClient

        from src import search, tracking

        client = MlflowClient()
        run_id, self.parent_run_id = self.parent_run_id, None  # finished here, not at exit
        try:
            if search.is_search(config):  # the study's best trial and Optuna's plots
                search.log_study(config, client, run_id)
            names = ("summary.csv", "points.csv", "accuracy_heatmap.png",
                     "accuracy_vs_bottleneck.png")  # fmt: skip
            for name in names:
                if (self.sweep_dir / name).is_file():
                    client.log_artifact(run_id, str(self.sweep_dir / name), "summary")
            if points:  # the best point, chosen on mean validation accuracy, and its CI
                top = points[0]
                point = f"bottleneck={top['bottleneck']} dropout={top['dropout']}"
                client.set_tag(run_id, "best_point", point)
                for key, value in top.items():
                    if key.endswith(("_mean", "_ci_low", "_ci_high")) and not math.isnan(value):
                        client.log_metric(run_id, f"best_{key}", value)
                client.log_metric(run_id, "best_n_seeds", top["n"])
                client.log_table(run_id, {c: [p[c] for p in points] for c in POINT_COLUMNS},
                                 "summary/points.json")  # fmt: skip
            if comparison:
                client.set_tag(run_id, "best_vs_runner_up", comparison_line(points, comparison))
                if not math.isnan(comparison["p_value"]):
                    client.log_metric(run_id, "best_vs_runner_up_p_value", comparison["p_value"])
            best = register_champion(rows, points, config.mlflow.registered_model_name)
            if best:  # chosen on validation; its test accuracy is reported, not used
                client.set_tag(run_id, "champion_run_id", best["run_id"])
                client.log_metric(run_id, "champion_val_accuracy", best["val_accuracy"])
                client.log_metric(run_id, "champion_test_accuracy", best["test_accuracy"])
        finally:
            client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
            os.environ.pop(tracking.PARENT_RUN_ENV, None)
