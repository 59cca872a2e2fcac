"""The Hydra callback of `python -m src.train ... -m`: at the start, the study's parent MLflow
run and the context its jobs read; at the end, the summary (CSV, figures, terminal tables, the
label budget), then the parent finished once with the champion.

A point is a setting of every key the sweep varies except `seed`; its seeds are repeats."""

import atexit
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.sweeps import context, job, parent, progress, slurm, summary
from src.sweeps.study import Study, open_study, swept_keys

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Parent run and context at multirun start; summary, champion and status at the end."""

    def __init__(self) -> None:
        self.study: Study | None = None
        self.parent_run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from src.runtime import UserError, quiet_tensorflow

        self.study = open_study(config)
        self.study.check()  # a misspelt swept key: one line at once
        quiet_tensorflow()  # before src.tracking imports Keras: no CUDA lines on a CPU machine
        slurm.follow_jobs(config)  # hydra/launcher=slurm on a cluster without accounting
        if config.mlflow.enabled:
            try:
                self.parent_run_id = self.open_parent(config)
            except UserError as e:  # Hydra would only warn, and run every point to fail
                raise SystemExit(f"error: {e}") from None
            atexit.register(self.interrupted)  # Ctrl-C or SIGTERM: no on_multirun_end
        self.study.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.study.context(self.parent_run_id).save(self.study.sweep_dir)

    def open_parent(self, config: DictConfig) -> str:
        """The study's parent run, created or resumed; the store and experiment made first."""
        from mlflow import MlflowClient

        from src import tracking

        tracking.setup(config)  # creates the store and experiment once, before any job starts
        client = MlflowClient()
        experiment_id = client.get_experiment_by_name(config.mlflow.experiment_name).experiment_id

        def create() -> str:
            return parent.create(client, experiment_id, config, self.study.key())

        return self.study.parent_run(client, experiment_id, create)

    def interrupted(self) -> None:
        """At exit before the sweep's end: its parent run ends KILLED."""
        from mlflow import MlflowClient

        parent.kill(MlflowClient(), self.parent_run_id)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """A progress line for each finished point (in the process that ran it)."""
        from hydra.core.hydra_config import HydraConfig

        if (ctx := context.current()) is None:
            return
        hc = HydraConfig.get()  # not job_return's copy: it resolves ${now:...} in sweep.dir again
        progress.report(ctx, Path(hc.sweep.dir), Path(hc.runtime.output_dir), job_return.overrides)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow import MlflowClient

        atexit.unregister(self.interrupted)
        try:
            done = self.summarize(config)
        except Exception:  # the parent run ends FAILED, not RUNNING for ever
            if self.parent_run_id:
                MlflowClient().set_terminated(self.parent_run_id, "FAILED")
            raise
        run_id, model = self.parent_run_id, config.mlflow.registered_model_name
        try:
            if run_id and self.study.claim_finish(run_id):
                parent.finish(MlflowClient(), run_id, done, model, self.study.log_extras)
        except Exception as e:  # e.g. the tracking server away: not a sweep that ended well
            raise SystemExit(f"error: sweep parent run {run_id} not finished: {job.failure(e)}"
                             ) from None  # fmt: skip
        if done.failed:
            points = "; ".join(f"{r['point']} ({r.get('error')})" for r in done.failed)
            raise SystemExit(f"error: {len(done.failed)} of {len(done.rows)} sweep points "
                             f"failed: {points}")  # fmt: skip

    def summarize(self, config: DictConfig) -> parent.Outcome:
        """The sweep's tables and figures in its folder and on the terminal."""
        from src import plots

        folder, rows, swept = self.study.sweep_dir, self.study.rows(), swept_keys(config)
        keys = summary.point_keys(swept)
        points, comparison = summary.summarize(rows, keys)
        summary.write_csv(rows, folder / "summary.csv", summary.with_keys(summary.COLUMNS, keys))
        summary.write_csv(points, folder / "points.csv",
                          summary.with_keys(summary.POINT_COLUMNS, keys))  # fmt: skip
        if points and self.study.heatmaps and keys == list(summary.POINT_KEYS):
            plots.sweep_heatmap(points, folder / "accuracy_heatmap.png")
            plots.sweep_lines(points, folder / "accuracy_vs_bottleneck.png")
        log.info("sweep summary (%s):\n%s", folder / "summary.csv", summary.runs_table(rows, keys))
        if points:
            log.info("points over seeds (%s):\n%s", folder / "points.csv",
                     summary.points_table(points, comparison, keys))  # fmt: skip
        if summary.LABELS in swept:
            summary.write_label_budget(rows, swept, bool(config.classify.finetune), folder)
        return parent.Outcome(folder, rows, keys, points, comparison)
