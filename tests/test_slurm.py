"""Sweeps and searches whose points are real Slurm jobs (hydra/launcher=slurm, submitit), on a
throwaway one-node cluster (tests/slurm.py), with the study on a throwaway PostgreSQL and the
runs on a throwaway `mlflow server` (conftest.py)."""

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from src.sweeps.optuna_study import counted
from tests.conftest import TINY, free_port, run_cli
from tests.sweeping import family, sweep_dir

pytestmark = pytest.mark.e2e
# What a TINY point needs; 1 CPU each, so that two jobs run at once on a 2-core node
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
         "hydra.launcher.timeout_min=10"]  # fmt: skip
log = logging.getLogger(__name__)


def submitted(folder: Path) -> list[str]:
    """The Slurm job ids (an array's tasks as <job>_<task>) that submitit ran for a sweep: one
    folder each under .submitit/ with the job's log."""
    return sorted(p.parent.name for p in folder.glob(".submitit/*/*_log.out"))


def check_family(url: str, points: int) -> tuple:
    """One FINISHED parent with `points` FINISHED children on the server; (parent, children)."""
    client = MlflowClient(tracking_uri=url)
    parent, children = family(client)
    assert parent.info.status == "FINISHED", parent.data.tags.get("error")
    assert [c.info.status for c in children] == ["FINISHED"] * points
    versions = client.search_model_versions("name = 'ae-classify-digits'")
    assert len(versions) == 1  # the champion, registered once
    assert client.get_model_version_by_alias("ae-classify-digits", "champion").run_id in {
        c.info.run_id for c in children
    }
    return parent, children


def test_grid_sweep_points_are_slurm_jobs(project, slurm, tracking_server):
    proc = run_cli(project, "-m", "src.train", "bottleneck=4", "dropout=0.0,0.5", *TINY, *SLURM,
                   "-m", env={"MLFLOW_TRACKING_URI": tracking_server})  # fmt: skip
    assert "sacct error" not in proc.stdout + proc.stderr  # no accounting: no warning per poll
    parent, children = check_family(tracking_server, 2)
    assert sorted(c.info.run_name for c in children) == ["d0.0", "d0.5"]
    jobs = submitted(sweep_dir(project))
    ran = slurm.settled()  # the cluster is this test's own
    log.warning("grid sweep: %d Slurm jobs %s", len(ran), ran)
    assert len(jobs) == 2 and sorted(ran) == jobs  # one array job, one task per point
    assert set(ran.values()) == {"COMPLETED"}


def test_optuna_search_trials_are_slurm_jobs(project, slurm, postgres, tracking_server):
    """Three trials, each a Slurm job, on a study in PostgreSQL."""
    storage = postgres.rsplit("/", 1)[0] + "/optuna"
    proc = run_cli(project, "-m", "src.train", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
                   f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=on-slurm",
                   *TINY, *SLURM, "-m", env={"MLFLOW_TRACKING_URI": tracking_server})  # fmt: skip
    assert "sacct error" not in proc.stdout + proc.stderr
    parent, children = check_family(tracking_server, 3)
    study = optuna.load_study(study_name="on-slurm", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert sorted(int(c.data.tags["optuna_trial"]) for c in children) == [0, 1, 2]
    assert parent.data.metrics["trials_complete"] == 3
    assert parent.data.metrics["best_trial_val_accuracy"] == pytest.approx(study.best_value)
    jobs = submitted(sweep_dir(project))
    ran = slurm.settled()  # the cluster is this test's own
    log.warning("search: %d Slurm jobs %s", len(ran), ran)
    assert len(jobs) == 3 and sorted(ran) == jobs and set(ran.values()) == {"COMPLETED"}


# Faults. The sweep's command runs as a process of its own, its output in driver.log; each
# test interrupts one thing while a point trains, then counts what ended how, and runs the same
# command again where the first did not complete the sweep.
FAULT_GRID = ["bottleneck=4,8", "dropout=0.0", *TINY, "pretrain.epochs=30", *SLURM]


def start_sweep(project: Path, url: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`python -m src.train <args> -m` in `project`, logging to `url`."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, **(env or {})}
    out = (project / "driver.log").open("a")
    return subprocess.Popen([sys.executable, "-m", "src.train", *args, "-m"], cwd=project,
                            env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def training_run(url: str, proc: subprocess.Popen, project: Path) -> Any:
    """The first child run that has logged an autoencoder epoch (its job is training)."""
    client = MlflowClient(tracking_uri=url)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert proc.poll() is None, (project / "driver.log").read_text()[-3000:]
        exp = client.get_experiment_by_name("ae-classify")
        runs = client.search_runs([exp.experiment_id], "tags.stage = 'train'") if exp else []
        for run in runs:
            if any(k.startswith("pretrain/") for k in run.data.metrics):
                return run
        time.sleep(0.5)
    raise AssertionError("no sweep point started training in 600 s")


def running(url: str) -> list[str]:
    """The names of the runs still RUNNING on the server."""
    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("ae-classify")
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    return [r.info.run_name for r in runs]


def finished_children(url: str) -> dict[str, int]:
    """{point: how many FINISHED child runs it has} under the one parent."""
    _, children = family(MlflowClient(tracking_uri=url))
    return dict(Counter(c.info.run_name for c in children if c.info.status == "FINISHED"))


def test_a_job_cancelled_with_scancel_is_run_again_by_the_same_command(
    project, slurm, tracking_server
):
    proc = start_sweep(project, tracking_server, *FAULT_GRID)
    try:
        run = training_run(tracking_server, proc, project)
        job_num = Path(run.data.tags["output_dir"]).name  # its array task
        [job] = [j for j in slurm.jobs() if j.endswith(f"_{job_num}")]
        slurm.run("scancel", job)
        assert proc.wait(timeout=600) == 1  # the other point still finished
    finally:
        proc.kill()
    out = (project / "driver.log").read_text()
    log.warning("scancel %s (point %s); the command ended:\n%s", job, run.info.run_name,
                "\n".join(out.splitlines()[-8:]))  # fmt: skip
    [last] = [line for line in out.splitlines() if line.startswith("error: ")]
    assert last.startswith(f"error: Slurm job {job} ended CANCELLED without a result")
    assert "run the same command again" in last and "Traceback" not in out
    first = slurm.settled()
    assert first[job] == "CANCELLED" and len(first) == 2
    assert not running(tracking_server)  # the cancelled point's run, the parent: KILLED
    done = finished_children(tracking_server)
    assert list(done.values()) == [1] and run.info.run_name not in done  # the other point

    run_cli(project, "-m", "src.train", *FAULT_GRID, "-m",
            env={"MLFLOW_TRACKING_URI": tracking_server})  # fmt: skip
    assert finished_children(tracking_server) == {"b4": 1, "b8": 1}  # none lost, none twice
    parent, _ = family(MlflowClient(tracking_uri=tracking_server))
    assert parent.info.status == "FINISHED" and not running(tracking_server)
    jobs = slurm.settled()
    log.warning("Slurm jobs: %s", jobs)
    assert len(jobs) == 4  # 2 + 2: the finished point's job found its run and reused it


def test_a_trial_whose_job_is_cancelled_is_run_again_by_the_search(
    project, slurm, postgres, tracking_server
):
    """scancel on a trial's job: the trial fails and is run again as a new trial (same
    parameters) in the same command, which then ends with the study's 2 trials complete."""
    storage = postgres.rsplit("/", 1)[0] + "/optuna"
    args = ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=cancelled", *TINY, "pretrain.epochs=30", *SLURM]  # fmt: skip
    proc = start_sweep(project, tracking_server, *args)
    try:
        run = training_run(tracking_server, proc, project)
        [job] = [j for j, state in slurm.jobs().items() if state == "RUNNING"]
        slurm.run("scancel", job)
        code = proc.wait(timeout=900)
    finally:
        proc.kill()
    out = (project / "driver.log").read_text()
    assert code == 0, out[-3000:]
    lost = int(run.data.tags["optuna_trial"])
    assert f"trial {lost}: job lost: Job {job}" in out and "CANCELLED" in out
    trials = optuna.load_study(study_name="cancelled", storage=storage).trials
    assert trials[lost].state.name == "FAIL"
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == lost)
    assert retry.state.name == "COMPLETE" and retry.params == trials[lost].params
    kept = counted(trials)
    assert len(kept) == 2 and {t.state.name for t in kept} == {"COMPLETE"}
    _, children = family(MlflowClient(tracking_uri=tracking_server))
    status = {int(c.data.tags["optuna_trial"]): c.info.status for c in children}
    assert status == {lost: "KILLED", **{t.number: "FINISHED" for t in kept}}
    assert not running(tracking_server)
    jobs = slurm.settled()
    log.warning("scancel %s (trial %d); Slurm jobs: %s", job, lost, jobs)
    assert sorted(jobs.values()) == ["CANCELLED", "COMPLETED", "COMPLETED"]


class MlflowServer:
    """`mlflow server` on PostgreSQL on a fixed port, which a test stops and starts again."""

    def __init__(self, backend: str, folder: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                    "--artifacts-destination", str(folder / "artifacts"),
                    "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1]]  # fmt: skip
        self.log = folder / "mlflow-server.log"

    def start(self) -> None:
        """Start it and wait until it answers."""
        out = self.log.open("a")
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1)
                return
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"no answer on {self.url} in 180 s"
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop it (its process group: the server and its workers)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


@pytest.fixture
def stoppable_server(postgres, tmp_path):
    server = MlflowServer(postgres, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("retries", ["7", "0"], ids=["mlflow_retries", "no_retries"])
def test_mlflow_server_stopped_20_s_mid_sweep(project, slurm, stoppable_server, retries):
    """The tracking server goes away for 20 s (and its start) while a point trains. With
    MLflow's 7 retries (its default) the jobs wait for it and every point finishes; with none,
    the points that could not log fail with a line naming the server, and the same command
    again completes the sweep. Either way each point has one FINISHED run, none RUNNING."""
    url = stoppable_server.url
    proc = start_sweep(project, url, *FAULT_GRID, env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": retries})
    try:
        run = training_run(url, proc, project)
        stopped = time.monotonic()
        stoppable_server.stop()
        time.sleep(20)
        stoppable_server.start()
        away = time.monotonic() - stopped  # 20 s and the server's start
        code = proc.wait(timeout=900)
    finally:
        proc.kill()
    out = (project / "driver.log").read_text()
    log.warning("server away %.0f s while %s trained; the command exited %d:\n%s", away,
                run.info.run_name, code, "\n".join(out.splitlines()[-3:]))  # fmt: skip
    logs = [f.read_text() for f in sweep_dir(project).glob(".submitit/*/*_log.out")]
    assert any("MLflow tracking server" in t or "Retrying" in t for t in logs)  # met the outage
    if retries == "0":
        [last] = [line for line in out.splitlines() if line.startswith("error: ")]
        assert code == 1 and f"MLflow tracking server {url} not answering" in last
        assert "run the same command again" in last
        run_cli(project, "-m", "src.train", *FAULT_GRID, "-m", env={"MLFLOW_TRACKING_URI": url})
    else:
        assert code == 0
    assert finished_children(url) == {"b4": 1, "b8": 1}
    parent, _ = family(MlflowClient(tracking_uri=url))
    assert parent.info.status == "FINISHED" and not running(url)
    log.warning("Slurm jobs: %s", slurm.settled())


def restart_postgres(url: str) -> None:
    """Restart the PostgreSQL server of `url` (conftest's `postgres`) with its options."""
    from tests.conftest import _as_postgres, _pg_bin

    port = url.rsplit(":", 1)[1].split("/")[0]
    data = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-h", "127.0.0.1", "-p",
                           port, "-U", "postgres", "-Atc", "show data_directory"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    _as_postgres(str(_pg_bin() / "pg_ctl"), "-D", data, "-m", "fast", "-w",
                 "-l", str(Path(data).parent / "log"), "restart")  # fmt: skip


def test_postgresql_restarted_mid_search(project, slurm, postgres, tracking_server):
    """PostgreSQL (the study and the tracking server's store) restarts while a trial trains:
    the study ends with exactly n_trials trials, each in one FINISHED child run."""
    storage = postgres.rsplit("/", 1)[0] + "/optuna"
    args = ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=restarted", "hydra.sweeper.heartbeat_interval=2",
            *TINY, "pretrain.epochs=30", *SLURM]  # fmt: skip
    proc = start_sweep(project, tracking_server, *args)
    try:
        run = training_run(tracking_server, proc, project)
        restart_postgres(postgres)
        code = proc.wait(timeout=900)
    finally:
        proc.kill()
    out = (project / "driver.log").read_text()
    log.warning("PostgreSQL restarted while %s trained; the command exited %d:\n%s",
                run.info.run_name, code, "\n".join(out.splitlines()[-8:]))  # fmt: skip
    if code != 0:
        run_cli(project, "-m", "src.train", *args, "-m",
                env={"MLFLOW_TRACKING_URI": tracking_server})  # fmt: skip
    study = optuna.load_study(study_name="restarted", storage=storage)
    trials = counted(study.trials)
    assert len(trials) == 3 and {t.state.name for t in trials} == {"COMPLETE"}
    _, children = family(MlflowClient(tracking_uri=tracking_server))
    done = Counter(c.data.tags["optuna_trial"] for c in children if c.info.status == "FINISHED")
    assert sorted(done) == sorted(str(t.number) for t in trials)
    assert set(done.values()) == {1} and not running(tracking_server)
    log.warning("Slurm jobs: %s", slurm.settled())
