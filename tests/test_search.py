"""Bayesian search (hydra/sweeper=optuna, src/search.py): config, a TPE search with its parent
run, pruning, and workers sharing a study on PostgreSQL."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from src import search
from tests.conftest import ROOT, copy_project, mlflow_client, run_cli

TINY = ["pretrain.epochs=2", "classify.epochs=3"]


def _compose(*overrides: str):
    """src.train's config with the Optuna sweeper, as `python -m src.train` composes it."""
    with initialize_config_dir(str(ROOT / "conf"), job_name="train", version_base="1.3"):
        return compose(config_name="train", overrides=["hydra/sweeper=optuna", *overrides],
                       return_hydra_config=True)  # fmt: skip


def _study(storage: str):
    import optuna

    [name] = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def _family(client: MlflowClient) -> tuple:
    """(the one parent run, its children) in the ae-classify experiment."""
    exp = client.get_experiment_by_name("ae-classify")
    runs = client.search_runs([exp.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def test_optuna_sweeper_composes_with_the_documented_keys():
    cfg = _compose("hydra.sweeper.n_trials=7", "hydra.sweeper.pruner=null")
    s = cfg.hydra.sweeper
    assert s._target_ == "hydra_plugins.ae_classify_optuna.OptunaSweeper"
    assert s.n_trials == 7 and s.direction == "maximize" and s.pruner is None
    assert s.storage.startswith("sqlite:///") and s.study_name is None
    assert s.sampler._target_ == "optuna.samplers.TPESampler" and s.sampler.seed == 42
    assert set(s.params) == {"bottleneck", "dropout"}
    assert search.is_search(cfg)
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance().class_name_to_class  # Hydra finds it where it looks
    assert "hydra_plugins.ae_classify_optuna.OptunaSweeper" in plugins


def test_study_name_follows_the_command_and_search_space():
    storage, name = search.study_identity(_compose())
    assert storage == f"sqlite:///{Path('multirun/optuna.db').resolve()}"
    assert name == search.study_identity(_compose())[1] and name.startswith("train-")
    assert search.study_identity(_compose("classify.epochs=3"))[1] != name
    narrower = "hydra.sweeper.params.dropout='interval(0, 0.3)'"
    assert search.study_identity(_compose(narrower))[1] != name
    assert search.study_identity(_compose("hydra.sweeper.n_trials=50"))[1] == name  # more trials
    assert search.study_identity(_compose("hydra.sweeper.study_name=mine"))[1] == "mine"


def test_search_space_in_hydra_sweep_syntax():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    parse = OverridesParser.create().parse_override
    assert search.distribution(parse("b=tag(log, int(interval(2, 64)))")) == IntDistribution(
        2, 64, log=True
    )
    assert search.distribution(parse("d=interval(0.0, 0.6)")) == FloatDistribution(0.0, 0.6)
    assert search.distribution(parse("b=range(4, 65, 4)")) == IntDistribution(4, 64, step=4)
    assert search.distribution(parse("b=8,16")) == CategoricalDistribution([8, 16])


class FakeLauncher:
    """Runs a trial's "job" in no time: val_accuracy from its overrides, in result.json."""

    def __init__(self, folder: Path, status: str = "FINISHED"):
        self.folder, self.status, self.jobs = folder, status, []

    def launch(self, batch: list, initial_job_idx: int) -> list:
        from types import SimpleNamespace

        [overrides] = batch
        values = dict(o.split("=", 1) for o in overrides)
        out = self.folder / str(initial_job_idx)
        out.mkdir(parents=True)
        point = {"bottleneck": int(values["bottleneck"]), "dropout": float(values["dropout"])}
        accuracy = 1 - abs(point["dropout"] - 0.3) - abs(point["bottleneck"] - 16) / 64
        result = {"status": self.status, "val_accuracy": accuracy, "seed": 42, **point}
        (out / "result.json").write_text(json.dumps(result))
        self.jobs.append(initial_job_idx)
        time.sleep(0.05)
        runtime = SimpleNamespace(output_dir=str(out))
        return [SimpleNamespace(hydra_cfg=SimpleNamespace(hydra=SimpleNamespace(runtime=runtime)))]


def _sweeper(tmp_path: Path, *overrides: str, status: str = "FINISHED") -> search.OptunaSweeper:
    """The configured sweeper on a fake launcher, with its study in tmp_path."""
    from types import SimpleNamespace

    from hydra.utils import instantiate

    storage = f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}"
    cfg = _compose(storage, f"hydra.sweep.dir={tmp_path / 'sweep'}", "mlflow.enabled=false",
                   *overrides)  # fmt: skip
    sweeper = instantiate(cfg.hydra.sweeper)
    sweeper.config, sweeper.hydra_context = cfg, SimpleNamespace(config_loader=None)
    sweeper.launcher = FakeLauncher(tmp_path / "jobs", status)
    return sweeper


def test_sweeper_runs_n_trials_and_a_second_run_continues_the_study(tmp_path):
    import threading

    first = _sweeper(tmp_path, "hydra.sweeper.n_trials=4")
    first.sweep([])
    assert first.launcher.jobs == [0, 1, 2, 3]
    study = search.load_study(first.config)
    assert study.best_value == max(t.value for t in study.trials)
    assert [r["status"] for r in search.rows(first.config)] == ["FINISHED"] * 4

    workers = [_sweeper(tmp_path, "hydra.sweeper.n_trials=10") for _ in range(2)]
    threads = [threading.Thread(target=w.sweep, args=([],)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    jobs = sorted(workers[0].launcher.jobs + workers[1].launcher.jobs)
    assert jobs == list(range(4, 10)) and all(w.launcher.jobs for w in workers)
    trials = search.counted(search.load_study(first.config).trials)
    assert len(trials) == 10 and len({tuple(t.params.items()) for t in trials}) == 10


def test_workers_that_start_together_agree_on_one_parent_run(tmp_path):
    import threading

    cfg = _compose(f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}")
    client = MlflowClient()
    experiment = client.create_experiment(f"parents-{tmp_path.name}")
    created = []

    def create() -> str:
        run_id = client.create_run(experiment).info.run_id
        time.sleep(0.5)  # a slow tracking server: the other worker must wait for the id
        created.append(run_id)
        return run_id

    ids = []
    threads = [threading.Thread(target=lambda: ids.append(search.parent_run(cfg, create)))
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(created) == 1 and ids == created * 2
    client.set_terminated(created[0], "FINISHED")  # later, the same study gets more trials
    assert search.parent_run(cfg, create) == created[0]
    assert client.get_run(created[0]).info.status == "RUNNING" and len(created) == 1
    client.delete_run(created[0])  # deleted by hand: a new parent
    assert search.parent_run(cfg, create) == created[1] != created[0]


def test_pruned_and_failed_jobs_become_pruned_and_failed_trials(tmp_path):
    sweeper = _sweeper(tmp_path, "hydra.sweeper.n_trials=2", status="PRUNED")
    sweeper.sweep([])
    assert [t.state.name for t in search.load_study(sweeper.config).trials] == ["PRUNED"] * 2
    assert [r["status"] for r in search.rows(sweeper.config)] == ["PRUNED"] * 2
    sweeper = _sweeper(tmp_path, "hydra.sweeper.n_trials=3", status="FAILED")
    sweeper.sweep([])
    assert search.load_study(sweeper.config).trials[2].state.name == "FAIL"


def test_a_trial_whose_worker_died_is_retried_with_its_parameters(tmp_path):
    import optuna

    sweeper = _sweeper(tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_interval=1",
                       "hydra.sweeper.grace_period=1")  # fmt: skip
    url, name = search.study_identity(sweeper.config)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    dead = study.ask({"bottleneck": optuna.distributions.IntDistribution(2, 64, log=True),
                      "dropout": optuna.distributions.FloatDistribution(0, 0.6)})  # fmt: skip
    with warnings.catch_warnings():  # heartbeats are experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RDBStorage(url, heartbeat_interval=1).record_heartbeat(dead._trial_id)
    time.sleep(2)  # its worker "died": no heartbeat since
    sweeper.sweep([])
    trials = search.load_study(sweeper.config).trials
    assert trials[0].state.name == "FAIL" and sweeper.launcher.jobs[0] != 0
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state.name == "COMPLETE" and retry.params == dead.params
    assert len(search.counted(trials)) == 2


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A project after a 6-trial TPE search (pruning on, but not before epoch 10)."""
    project = copy_project(tmp_path_factory.mktemp("searched"))
    proc = run_cli(project, "-m", "src.train", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=6",
                   *TINY, "-m")  # fmt: skip
    return project, proc


@pytest.mark.e2e
def test_tpe_search_trials_are_children_of_one_parent_with_the_studys_best(searched):
    project, proc = searched
    client = mlflow_client(project)
    parent, children = _family(client)
    assert parent.info.status == "FINISHED" and len(children) == 6
    assert all(c.info.status == "FINISHED" for c in children)
    assert sorted(int(c.data.tags["optuna_trial"]) for c in children) == list(range(6))
    assert all(c.info.run_name.startswith(f"t{c.data.tags['optuna_trial']}-b") for c in children)

    study = _study(f"sqlite:///{project / 'multirun/optuna.db'}")
    assert len(study.trials) == 6 and all(t.state.name == "COMPLETE" for t in study.trials)
    accuracy = {c.info.run_id: c.data.metrics["val_accuracy"] for c in children}
    assert study.best_value == pytest.approx(max(accuracy.values()))
    assert parent.data.metrics["best_trial_val_accuracy"] == pytest.approx(study.best_value)
    assert parent.data.tags["best_trial"] == str(study.best_trial.number)
    best = next(c for c in children if c.data.tags["optuna_trial"] == str(study.best_trial.number))
    assert parent.data.tags["best_trial_run_id"] == best.info.run_id
    assert parent.data.metrics["trials_complete"] == 6
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert {"optuna/optimization_history.html", "optuna/param_importances.html"} <= plots
    # each trial reported its validation accuracy after every epoch to the study
    assert all(sorted(t.intermediate_values) == [0, 1, 2] for t in study.trials)

    sweep_dir = next(project.glob("multirun/*/*/multirun.yaml")).parent
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert len(rows) == 6 and all(r["status"] == "FINISHED" for r in rows)
    assert sorted(p.name for p in sweep_dir.glob("[0-9]")) == [str(n) for n in range(6)]
    champion = client.get_model_version_by_alias("ae-classify-digits", "champion")
    assert accuracy[champion.run_id] == study.best_value  # the best validation accuracy

    again = run_cli(project, "-m", "src.train", "hydra/sweeper=optuna",
                    "hydra.sweeper.n_trials=6", *TINY, "-m")  # fmt: skip
    assert len(_study(f"sqlite:///{project / 'multirun/optuna.db'}").trials) == 6  # done already
    assert _family(client)[0].info.run_id == parent.info.run_id
    assert "study train-" in again.stderr + again.stdout


@pytest.mark.e2e
def test_pruning_stops_trials_with_a_learning_rate_that_cannot_train(project):
    """A head with learning rate 1e-7 stays at chance; the median pruner stops such trials
    once a trial with a working rate has finished."""
    pruner = ["hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0"]
    proc = run_cli(project, "-m", "src.train", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=6",
                   *pruner, "bottleneck=16", "dropout=0.0", "classify.learning_rate=1e-7,0.02",
                   "pretrain.epochs=2", "classify.epochs=6", "-m")  # fmt: skip
    assert proc.returncode == 0  # pruned trials are not failures
    study = _study(f"sqlite:///{project / 'multirun/optuna.db'}")
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned and all(t.params["classify.learning_rate"] == 1e-7 for t in pruned)
    assert len(study.trials) == 6
    client = mlflow_client(project)
    _, children = _family(client)
    by_trial = {int(c.data.tags["optuna_trial"]): c for c in children}
    assert len(children) == 6 and sorted(by_trial) == list(range(6))
    for t in pruned:
        run = by_trial[t.number]
        assert run.info.status == "KILLED" and "pruned at epoch" in run.data.tags["pruned"]
    sweep_dir = next(project.glob("multirun/*/*/multirun.yaml")).parent
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert sum(r["status"] == "PRUNED" for r in rows) == len(pruned)
    assert "PRUNED (Trial was pruned at epoch" in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_trials_in_other_processes_report_to_the_study(project):
    """With the submitit launcher every trial is a process of its own: it finds its trial
    through the storage and reports each epoch there."""
    run_cli(project, "-m", "src.train", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
            "hydra/launcher=submitit_local", *TINY, "-m")  # fmt: skip
    study = _study(f"sqlite:///{project / 'multirun/optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(sorted(t.intermediate_values) == [0, 1, 2] for t in study.trials)
    _, children = _family(mlflow_client(project))
    assert sorted(c.data.tags["optuna_trial"] for c in children) == ["0", "1"]


@pytest.mark.e2e
def test_two_workers_share_one_study_on_postgresql(project, postgres, tracking_server):
    """The same command in two processes, one PostgreSQL storage, one MLflow server: exactly
    six trials between them, each in exactly one child run of one parent."""
    storage = postgres.rsplit("/", 1)[0] + "/optuna"
    args = [sys.executable, "-m", "src.train", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=6",
            f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=shared", *TINY,
            "-m"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_server}
    out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    workers = [subprocess.Popen(args, cwd=project, env=env, **out) for _ in range(2)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    study = _study(storage)
    trials = search.counted(study.trials)  # a surplus trial (never launched) is not counted
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    ran = [sum(f"Trial {n} finished" in out for out in outputs) for n in range(6)]
    assert ran == [1] * 6  # each trial ran in one worker
    assert all(out.count(" finished with value") >= 1 for out in outputs)  # both worked
    parent, children = _family(MlflowClient(tracking_uri=tracking_server))
    assert sorted(int(c.data.tags["optuna_trial"]) for c in children) == list(range(6))
    assert all(c.info.status == "FINISHED" for c in children)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_trial_val_accuracy"] == pytest.approx(study.best_value)
    # both workers finished the parent and checked the champion: one version was registered
    versions = MlflowClient(tracking_uri=tracking_server).search_model_versions(
        "name = 'ae-classify-digits'"
    )
    assert len(versions) == 1


@pytest.mark.e2e
def test_a_worker_killed_with_sigkill_leaves_its_trial_to_be_retried(project):
    """kill -9 during trial 1; the same command again fails it by heartbeat and retries it."""
    beat = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    args = ["-m", "src.train", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", *beat, *TINY,
            "-m"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    proc = subprocess.Popen([sys.executable, *args], cwd=project, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    client = mlflow_client(project)
    try:
        for _ in range(1200):  # until trial 1's MLflow run has started
            assert proc.poll() is None, "the search ended before it could be killed"
            if list(project.glob("multirun/*/*/1/.hydra")):
                exp = client.get_experiment_by_name("ae-classify")
                if client.search_runs([exp.experiment_id], "tags.optuna_trial = '1'"):
                    break
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    storage = f"sqlite:///{project / 'multirun/optuna.db'}"
    assert [t.state.name for t in _study(storage).trials] == ["COMPLETE", "RUNNING"]

    run_cli(project, *args)
    trials = _study(storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].system_attrs["failed_trial"] == 1 and trials[2].params == trials[1].params
    parent, children = _family(client)
    status = {int(c.data.tags["optuna_trial"]): c.info.status for c in children}
    assert status == {0: "FINISHED", 1: "KILLED", 2: "FINISHED"}
    assert parent.info.status == "FINISHED"
