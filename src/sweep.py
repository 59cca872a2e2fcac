"""Hydra callback for `python -m src.train ... -m`: one parent MLflow run per sweep, a summary
(CSV, heatmap, accuracy-vs-bottleneck plot, terminal table; the label-budget curve when the
sweep varies classify.labels_per_class) and the champion model.

A point is a setting of every key the sweep varies except `seed`; its seeds are repeats."""

import atexit
import contextlib
import csv
import functools
import json
import logging
import math
import os
from collections.abc import Sequence
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


def swept_keys(config: DictConfig) -> list[str]:
    """The config keys a sweep varies: command-line overrides with several values, and
    hydra.sweeper.params (a preset's grid, a search's space) unless the command line fixes them."""
    from src import search

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    task = config.hydra.overrides.task
    keys = [key(o) for o in task if is_swept(o)]
    fixed = {key(o) for o in task if not is_swept(o)}  # the command line wins over the params
    keys += [k for k in search.flat_params(config.hydra.sweeper.get("params"))
             if k not in keys and k not in fixed]  # fmt: skip
    return [k for k in keys if not k.startswith("hydra.")]


def point_keys(swept: list[str]) -> list[str]:
    """A point's identity: bottleneck, dropout and every other swept key but seed."""
    return [*stats.POINT_KEYS, *(k for k in swept if k not in (*stats.POINT_KEYS, "seed"))]


def override_values(overrides: list[str]) -> dict[str, Any]:
    """{key: value} of a job's overrides, typed as Hydra reads them (null, false, 0.5, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)}


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder of the sweep: its overrides' values and its result.json (missing:
    the job crashed)."""
    rows = []
    jobs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    for job in sorted(jobs, key=lambda p: int(p.name) if p.name.isdigit() else p.name):
        overrides = yaml.safe_load((job / ".hydra/overrides.yaml").read_text()) or []
        row = {"point": ",".join(overrides) or job.name, **override_values(overrides)}
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
BUDGET_COLUMNS = [
    "setting",
    "labels_per_class",
    "x",
    "method",
    "n",
    "seeds",
    *(f"test_accuracy_{s}" for s in ("mean", "ci_low", "ci_high")),
]


def with_keys(columns: list[str], keys: list[str]) -> list[str]:
    """`columns` with the point's keys other than bottleneck and dropout after "dropout"."""
    extra = [k for k in keys if k not in columns]
    i = columns.index("dropout") + 1
    return [*columns[:i], *extra, *columns[i:]]


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


def as_text(value: Any) -> str:
    """A config value as it is written on the command line: null, true, 0.5."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return short_number(str(value))


def _extra(row: dict[str, Any], extra: list[str]) -> str:
    """The values of the point's other keys, each in a column as wide as its key."""
    return "".join(f" {as_text(row.get(k)):>{len(k)}}" for k in extra)


def table(rows: list[dict[str, Any]], keys: Sequence[str] = stats.POINT_KEYS) -> str:
    """A short fixed-width table of the runs for the terminal."""
    extra = [k for k in keys if k not in stats.POINT_KEYS]
    lines = [
        f"{'bottleneck':>10} {'dropout':>7}{''.join(f' {k}' for k in extra)} {'seed':>5} "
        f"{'val acc':>8} {'test acc':>8} {'loss':>7} {'recon mse':>9} {'seconds':>7}  status"
    ]
    for r in rows:
        if r["status"] == "FINISHED":
            lines.append(
                f"{r['bottleneck']:>10} {short_number(str(r['dropout'])):>7}{_extra(r, extra)} "
                f"{r['seed']:>5} {r['val_accuracy']:>8.4f} {r['test_accuracy']:>8.4f} "
                f"{r['test_loss']:>7.4f} {r['test_reconstruction_mse']:>9.5f} "
                f"{r['train_seconds']:>7.1f}  FINISHED"
            )
        else:
            lines.append(f"{r.get('point')}: {r['status']} ({r.get('error')})")
    return "\n".join(lines)


def _mean_ci(p: dict[str, Any], m: str) -> str:
    if math.isnan(p[f"{m}_ci_low"]):
        return f"{p[f'{m}_mean']:.4f}{'':>18}"
    return f"{p[f'{m}_mean']:.4f} [{p[f'{m}_ci_low']:.4f}, {p[f'{m}_ci_high']:.4f}]"


def points_table(
    points: list[dict[str, Any]],
    comparison: dict[str, Any] | None,
    keys: Sequence[str] = stats.POINT_KEYS,
) -> str:
    """Per point over seeds: n, mean and 95 % CI; the best point (mean validation accuracy)
    marked; then the paired comparison with the runner-up, or why there is none."""
    extra = [k for k in keys if k not in stats.POINT_KEYS]
    lines = [f"  {'bottleneck':>10} {'dropout':>7}{''.join(f' {k}' for k in extra)} {'n':>3}  "
             f"{'val acc [95 % CI]':<33} test acc [95 % CI]"]  # fmt: skip
    for i, p in enumerate(points):
        lines.append(
            f"{'*' if i == 0 else ' '} {p['bottleneck']:>10} {short_number(str(p['dropout'])):>7}"
            f"{_extra(p, extra)} {p['n']:>3}  "
            f"{_mean_ci(p, 'val_accuracy'):<33} {_mean_ci(p, 'test_accuracy')}"
        )
    lines.append("* best point: highest mean validation accuracy (test accuracy is not used)")
    lines.append(comparison_line(points, comparison, keys))
    return "\n".join(lines)


def point_label(point: dict[str, Any], keys: Sequence[str] = stats.POINT_KEYS) -> str:
    """bottleneck=32, dropout=0.2, classify.labels_per_class=10: a point in words."""
    return ", ".join(f"{k}={as_text(point[k])}" for k in keys)


def budget_table(budget: list[dict[str, Any]]) -> str:
    """The label budget for the terminal: one line per labels per class and method."""
    lines = [f"{'labels/class':>12}  {'method':<32} {'n':>3}  test acc [95 % CI]"]
    for b in budget:
        setting = f"  ({b['setting']})" if b["setting"] else ""
        lines.append(f"{b['labels_per_class']!s:>12}  {b['method']:<32} {b['n']:>3}  "
                     f"{_mean_ci(b, 'test_accuracy')}{setting}")  # fmt: skip
    return "\n".join(lines)


def comparison_line(
    points: list[dict[str, Any]],
    comparison: dict[str, Any] | None,
    keys: Sequence[str] = stats.POINT_KEYS,
) -> str:
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
        f"best ({point_label(best, keys)}) vs runner-up ({point_label(other, keys)}) on "
        f"{comparison['n']} paired seeds: test accuracy {comparison['difference']:+.4f}, "
        "paired t-test "
        + ("p not defined (equal differences)" if math.isnan(p) else f"p = {p:.3g}")
    )


def summarize(
    rows: list[dict[str, Any]], keys: Sequence[str] = stats.POINT_KEYS
) -> tuple[list[dict], dict | None]:
    """(points over seeds, best first; paired test-accuracy comparison of best vs runner-up)."""
    points = stats.by_point(rows, keys)
    if len(points) < 2:
        return points, None
    return points, stats.paired_comparison(rows, points[0], points[1], "test_accuracy", keys)


def write_label_budget(
    rows: list[dict[str, Any]], swept: list[str], finetune: bool, folder: Path
) -> list[dict[str, Any]]:
    """label_budget.csv and label_budget.png in `folder`: test accuracy of every method per
    labels per class over seeds (src.stats.label_budget says which points each method comes
    from; `finetune`: classify.finetune when the sweep does not vary it); one curve per setting
    of the other swept keys but seed. Returns the CSV's rows."""
    from src import plots

    settings = [k for k in swept if k not in (stats.LABELS, stats.FINETUNE, "seed")]
    budget = stats.label_budget(rows, finetune, settings)
    if budget:
        write_csv(budget, folder / "label_budget.csv", BUDGET_COLUMNS)
        plots.label_budget(budget, folder / "label_budget.png")
        log.info("label budget (%s):\n%s", folder / "label_budget.csv", budget_table(budget))
    return budget


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
    rows: list[dict[str, Any]],
    points: list[dict[str, Any]],
    model_name: str,
    keys: Sequence[str] = stats.POINT_KEYS,
) -> dict[str, Any] | None:
    """Register the best run of the best point (both chosen on validation accuracy, never on
    test accuracy) as `model_name` with the alias `champion`, if it beats the current champion
    on the same prepared data; otherwise log why the alias stays. Returns the run moved to."""
    import mlflow
    from mlflow import MlflowClient

    if not points:
        return None
    top = points[0]
    point = stats.identity(top, keys)
    done = [
        r
        for r in rows
        if r["status"] == "FINISHED" and r.get("run_id") and stats.identity(r, keys) == point
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
    # another worker of the same search may have just registered this run: reuse its version
    same = client.search_model_versions(f"name = '{model_name}' AND run_id = '{best['run_id']}'")
    version = same[0] if same else mlflow.register_model(models[0].model_uri, model_name)
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
        os.environ[tracking.SWEPT_KEYS_ENV] = ",".join(swept_keys(config))  # the run names
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
        from src import search

        run = client.create_run(
            experiment_id,
            run_name=" ".join(config.hydra.overrides.task) or "sweep",
            tags={"sweep": "parent", "sweep_dir": str(self.sweep_dir), "sweep_key": key},
        )
        logged = set()
        for override in config.hydra.overrides.task:  # the sweep's grid and fixed settings
            k, _, value = override.partition("=")
            client.log_param(run.info.run_id, k.lstrip("+~"), value)
            logged.add(k.lstrip("+~"))
        params = config.hydra.sweeper.get("params")
        if not search.is_search(config):  # a grid from config (a preset), as the command line's
            for k, value in search.flat_params(params).items():
                if k not in logged:
                    client.log_param(run.info.run_id, k, value)
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
        swept = swept_keys(config)
        keys = point_keys(swept)
        points, comparison = summarize(rows, keys)
        write_csv(rows, self.sweep_dir / "summary.csv", with_keys(COLUMNS, keys))
        write_csv(points, self.sweep_dir / "points.csv", with_keys(POINT_COLUMNS, keys))
        # a search has Optuna's plots instead; other swept keys would share a grid cell
        if points and not searched and keys == list(stats.POINT_KEYS):
            plots.sweep_heatmap(points, self.sweep_dir / "accuracy_heatmap.png")
            plots.sweep_lines(points, self.sweep_dir / "accuracy_vs_bottleneck.png")
        log.info("sweep summary (%s):\n%s", self.sweep_dir / "summary.csv", table(rows, keys))
        if points:
            log.info("points over seeds (%s):\n%s", self.sweep_dir / "points.csv",
                     points_table(points, comparison, keys))  # fmt: skip
        if stats.LABELS in swept:
            write_label_budget(rows, swept, bool(config.classify.finetune), self.sweep_dir)
        failed = [r for r in rows if r["status"] not in ("FINISHED", "PRUNED")]
        if self.parent_run_id:
            self._finish_parent(config, rows, points, comparison, failed, keys)
        if failed:
            points = "; ".join(f"{r['point']} ({r.get('error')})" for r in failed)
            raise SystemExit(f"error: {len(failed)} of {len(rows)} sweep points failed: {points}")

    def _finish_parent(
        self,
        config: DictConfig,
        rows: list,
        points: list,
        comparison: dict | None,
        failed: list,
        keys: Sequence[str],
    ) -> None:
        from mlflow import MlflowClient

        from src import search, tracking

        client = MlflowClient()
        run_id, self.parent_run_id = self.parent_run_id, None  # finished here, not at exit
        try:
            if search.is_search(config):  # the study's best trial and Optuna's plots
                search.log_study(config, client, run_id)
            names = ("summary.csv", "points.csv", "accuracy_heatmap.png",
                     "accuracy_vs_bottleneck.png", "label_budget.csv",
                     "label_budget.png")  # fmt: skip
            for name in names:
                if (self.sweep_dir / name).is_file():
                    client.log_artifact(run_id, str(self.sweep_dir / name), "summary")
            if points:  # the best point, chosen on mean validation accuracy, and its CI
                top = points[0]
                client.set_tag(run_id, "best_point", point_label(top, keys))
                for key, value in top.items():
                    if key.endswith(("_mean", "_ci_low", "_ci_high")) and not math.isnan(value):
                        client.log_metric(run_id, f"best_{key}", value)
                client.log_metric(run_id, "best_n_seeds", top["n"])
                columns = with_keys(POINT_COLUMNS, keys)
                client.log_table(run_id, {c: [p[c] for p in points] for c in columns},
                                 "summary/points.json")  # fmt: skip
            if comparison:
                client.set_tag(run_id, "best_vs_runner_up",
                               comparison_line(points, comparison, keys))  # fmt: skip
                if not math.isnan(comparison["p_value"]):
                    client.log_metric(run_id, "best_vs_runner_up_p_value", comparison["p_value"])
            best = register_champion(rows, points, config.mlflow.registered_model_name, keys)
            if best:  # chosen on validation; its test accuracy is reported, not used
                client.set_tag(run_id, "champion_run_id", best["run_id"])
                client.log_metric(run_id, "champion_val_accuracy", best["val_accuracy"])
                client.log_metric(run_id, "champion_test_accuracy", best["test_accuracy"])
        finally:
            client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
            os.environ.pop(tracking.PARENT_RUN_ENV, None)
