"""Bayesian search (hydra/sweeper=optuna, src/sweeps/optuna_*.py): config, the ask-and-tell
sweeper, a TPE search with its parent run (in this process), pruning, the parent finished once
by workers that end together, and workers sharing a study on PostgreSQL."""

import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from src.sweeps import optuna_study, parent, study
from src.sweeps.optuna_study import OptunaStudy, counted
from src.sweeps.optuna_sweeper import OptunaSweeper, distribution
from tests.conftest import ROOT, mlflow_client, run_cli
from tests.conftest import TINY as TINY_
from tests.sweeping import client_of, family, sweep_dir, train_multirun

TINY = [*TINY_, "classify.epochs=3"]  # three epochs reported to each trial


def _compose(*overrides: str):
    """src.train's config with the Optuna sweeper, as `python -m src.train` composes it."""
    with initialize_config_dir(str(ROOT / "conf"), job_name="train", version_base="1.3"):
        return compose(config_name="train", overrides=["hydra/sweeper=optuna", *overrides],
                       return_hydra_config=True)  # fmt: skip


def _study(storage: str):
    import optuna

    [name] = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


_family = family


def test_optuna_sweeper_composes_with_the_documented_keys():
    cfg = _compose("hydra.sweeper.n_trials=7", "hydra.sweeper.pruner=null")
    s = cfg.hydra.sweeper
    assert s._target_ == "hydra_plugins.ae_classify_optuna.OptunaSweeper"
    assert s.n_trials == 7 and s.direction == "maximize" and s.pruner is None
    assert s.storage.startswith("sqlite:///") and s.study_name is None
    assert s.sampler._target_ == "optuna.samplers.TPESampler" and s.sampler.seed == 42
    assert set(s.params) == {"bottleneck", "dropout"}
    assert study.is_search(cfg)
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance().class_name_to_class  # Hydra finds it where it looks
    assert "hydra_plugins.ae_classify_optuna.OptunaSweeper" in plugins


def test_study_name_follows_the_command_and_search_space():
    first = OptunaStudy(_compose())
    assert first.url == f"sqlite:///{Path('multirun/optuna.db').resolve()}"
    name = first.name
    assert name == OptunaStudy(_compose()).name and name.startswith("train-")
    assert OptunaStudy(_compose("classify.epochs=3")).name != name
    narrower = "hydra.sweeper.params.dropout='interval(0, 0.3)'"
    assert OptunaStudy(_compose(narrower)).name != name
    assert OptunaStudy(_compose("hydra.sweeper.n_trials=50")).name == name  # more trials
    assert OptunaStudy(_compose("hydra.sweeper.study_name=mine")).name == "mine"


def test_search_space_in_hydra_sweep_syntax():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    parse = OverridesParser.create().parse_override
    assert distribution(parse("b=tag(log, int(interval(2, 64)))")) == IntDistribution(
        2, 64, log=True
    )
    assert distribution(parse("d=interval(0.0, 0.6)")) == FloatDistribution(0.0, 0.6)
    assert distribution(parse("b=range(4, 65, 4)")) == IntDistribution(4, 64, step=4)
    assert distribution(parse("b=8,16")) == CategoricalDistribution([8, 16])


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


def _sweeper(tmp_path: Path, *overrides: str, status: str = "FINISHED") -> OptunaSweeper:
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
    loaded = OptunaStudy(first.config).load()
    assert loaded.best_value == max(t.value for t in loaded.trials)
    assert [r["status"] for r in OptunaStudy(first.config).rows()] == ["FINISHED"] * 4

    workers = [_sweeper(tmp_path, "hydra.sweeper.n_trials=10") for _ in range(2)]
    threads = [threading.Thread(target=w.sweep, args=([],)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    jobs = sorted(workers[0].launcher.jobs + workers[1].launcher.jobs)
    assert jobs == list(range(4, 10)) and all(w.launcher.jobs for w in workers)
    trials = counted(OptunaStudy(first.config).load().trials)
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
    search = OptunaStudy(cfg)
    threads = [threading.Thread(target=lambda: ids.append(search.parent_run(client, experiment,
                                                                            create)))
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(created) == 1 and ids == created * 2
    client.set_terminated(created[0], "FINISHED")  # later, the same study gets more trials
    assert search.parent_run(client, experiment, create) == created[0]
    assert client.get_run(created[0]).info.status == "RUNNING" and len(created) == 1
    client.delete_run(created[0])  # deleted by hand: a new parent
    assert search.parent_run(client, experiment, create) == created[1] != created[0]


def test_pruned_and_failed_jobs_become_pruned_and_failed_trials(tmp_path):
    sweeper = _sweeper(tmp_path, "hydra.sweeper.n_trials=2", status="PRUNED")
    sweeper.sweep([])
    assert [t.state.name for t in OptunaStudy(sweeper.config).load().trials] == ["PRUNED"] * 2
    assert [r["status"] for r in OptunaStudy(sweeper.config).rows()] == ["PRUNED"] * 2
    sweeper = _sweeper(tmp_path, "hydra.sweeper.n_trials=3", status="FAILED")
    sweeper.sweep([])
    assert OptunaStudy(sweeper.config).load().trials[2].state.name == "FAIL"


@pytest.mark.parametrize("beat", [True, False], ids=["after_its_first_heartbeat", "before"])
def test_a_trial_whose_worker_died_is_retried_with_its_parameters(tmp_path, beat):
    """A worker died with its trial RUNNING, its last heartbeat older than the grace period; or
    killed between ask() and its first heartbeat, which Optuna's fail_stale_trials never fails:
    either way the trial is failed and retried with its parameters."""
    import optuna

    sweeper = _sweeper(tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_interval=1",
                       "hydra.sweeper.grace_period=1")  # fmt: skip
    url, name = OptunaStudy(sweeper.config).url, OptunaStudy(sweeper.config).name
    created = optuna.create_study(study_name=name, storage=url, direction="maximize")
    dead = created.ask({"bottleneck": optuna.distributions.IntDistribution(2, 64, log=True),
                      "dropout": optuna.distributions.FloatDistribution(0, 0.6)})  # fmt: skip
    if beat:
        with warnings.catch_warnings():  # heartbeats are experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.RDBStorage(url, heartbeat_interval=1).record_heartbeat(dead._trial_id)
    time.sleep(2)  # its worker "died": no heartbeat for longer than the grace period
    sweeper.sweep([])
    trials = OptunaStudy(sweeper.config).load().trials
    assert trials[0].state.name == "FAIL" and 0 not in sweeper.launcher.jobs
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state.name == "COMPLETE" and retry.params == dead.params
    assert len(counted(trials)) == 2 and all(t.state.name != "RUNNING" for t in trials)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A folder after a 4-trial TPE search in this process (pruning on, not before epoch 20),
    with what the search printed in its console.txt."""
    workdir = tmp_path_factory.mktemp("searched")
    console = io.StringIO()
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        train_multirun(workdir, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", *TINY)
    (workdir / "console.txt").write_text(console.getvalue())
    return workdir


def parent_lines(said: str) -> list[str]:
    return [line for line in said.splitlines() if "parent run" in line]


def test_tpe_search_trials_are_children_of_one_parent_with_the_studys_best(searched, capsys):
    client = client_of(searched)
    parent, children = _family(client)
    assert parent.info.status == "FINISHED" and len(children) == 4
    # named like a grid's parent: the command's overrides, then the space it searches
    space = ["bottleneck=tag(log, int(interval(2, 64)))", "dropout=interval(0.0, 0.6)"]
    assert parent.info.run_name == " ".join([*TINY, *space])  # hydra.* overrides are Hydra's
    # the console names it once, as a grid's, and the study once (none of Optuna's own lines)
    said = (searched / "console.txt").read_text()
    (line,) = parent_lines(said)
    assert line.endswith(f"sweep parent run {parent.info.run_id} ({parent.info.run_name})")
    assert len([line for line in said.splitlines() if "study train-" in line]) == 2  # start, end
    assert "A new study created" not in said and "Using an existing study" not in said
    # a progress line per trial, its sampled values as short as its run name's (t3-b12-d0.312)
    values = re.findall(r"\] trial \d: bottleneck=(\d+) dropout=(\S+)  ", said)
    assert len(values) == 4 and all(len(dropout) <= 6 for _, dropout in values), values
    assert all(c.info.status == "FINISHED" for c in children)
    assert sorted(int(c.data.tags["optuna_trial"]) for c in children) == list(range(4))
    assert all(c.info.run_name.startswith(f"t{c.data.tags['optuna_trial']}-b") for c in children)

    found = _study(f"sqlite:///{searched / 'multirun/optuna.db'}")
    assert len(found.trials) == 4 and all(t.state.name == "COMPLETE" for t in found.trials)
    assert found.metric_names == ["val_accuracy"]  # optuna-dashboard's name for the objective
    accuracy = {c.info.run_id: c.data.metrics["val_accuracy"] for c in children}
    assert found.best_value == pytest.approx(max(accuracy.values()))
    assert parent.data.metrics["best_trial_val_accuracy"] == pytest.approx(found.best_value)
    assert parent.data.tags["best_trial"] == str(found.best_trial.number)
    best = next(c for c in children if c.data.tags["optuna_trial"] == str(found.best_trial.number))
    assert parent.data.tags["best_trial_run_id"] == best.info.run_id
    assert parent.data.metrics["trials_complete"] == 4
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert {"optuna/optimization_history.html", "optuna/param_importances.html"} <= plots
    # each trial reported its validation accuracy after every epoch to the study
    assert all(sorted(t.intermediate_values) == [0, 1, 2] for t in found.trials)

    folder = sweep_dir(searched)
    rows = list(csv.DictReader((folder / "summary.csv").open()))
    assert len(rows) == 4 and all(r["status"] == "FINISHED" for r in rows)
    assert sorted(p.name for p in folder.glob("[0-9]")) == [str(n) for n in range(4)]
    champion = client.get_model_version_by_alias("ae-classify-digits", "champion")
    assert accuracy[champion.run_id] == found.best_value  # the best validation accuracy

    capsys.readouterr()
    train_multirun(searched, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", *TINY)
    assert len(_study(f"sqlite:///{searched / 'multirun/optuna.db'}").trials) == 4  # done
    assert _family(client)[0].info.run_id == parent.info.run_id
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "study train-" in out
    assert "A new study created" not in out and "Using an existing study" not in out  # Optuna's
    (line,) = parent_lines(out)  # joined, not created: the same run, its study named
    assert f"parent run {parent.info.run_id} ({parent.info.run_name}) of study train-" in line


def test_pruning_stops_trials_with_a_learning_rate_that_cannot_train(tmp_path):
    """A head with learning rate 1e-7 stays at chance; the median pruner stops such trials
    once a trial with a working rate has finished."""
    pruner = ["hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0"]
    train_multirun(tmp_path, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", *pruner,
                   "bottleneck=16", "dropout=0.0", "classify.learning_rate=1e-7,0.02",
                   "pretrain.epochs=2", "classify.epochs=6")  # fmt: skip
    found = _study(f"sqlite:///{tmp_path / 'multirun/optuna.db'}")  # no SystemExit: not failures
    pruned = [t for t in found.trials if t.state.name == "PRUNED"]
    assert pruned and all(t.params["classify.learning_rate"] == 1e-7 for t in pruned)
    assert len(found.trials) == 4
    _, children = _family(client_of(tmp_path))
    by_trial = {int(c.data.tags["optuna_trial"]): c for c in children}
    assert len(children) == 4 and sorted(by_trial) == list(range(4))
    for t in pruned:
        run = by_trial[t.number]
        assert run.info.status == "KILLED" and "pruned at epoch" in run.data.tags["pruned"]
    rows = list(csv.DictReader((sweep_dir(tmp_path) / "summary.csv").open()))
    assert sum(r["status"] == "PRUNED" for r in rows) == len(pruned)
    assert all("pruned at epoch" in r["error"] for r in rows if r["status"] == "PRUNED")


def test_claim_is_won_by_exactly_one_of_many_callers(tmp_path):
    import threading

    url = f"sqlite:///{tmp_path / 'claims.db'}"
    won = []
    threads = [threading.Thread(target=lambda: won.append(optuna_study.claim(url, "k")))
               for _ in range(6)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False] * 5 + [True]
    assert optuna_study.claim(url, "another key") and not optuna_study.claim(url, "k")


def test_workers_that_end_together_finish_the_shared_parent_once(tmp_path, monkeypatch):
    """Two workers of one search reach the end at the same moment: one logs the summary and
    the champion rules and ends the parent; the other leaves it."""
    import threading

    import optuna
    from hydra.core.hydra_config import HydraConfig
    from optuna.distributions import IntDistribution

    from src.sweeps.callback import SweepCallback

    monkeypatch.chdir(tmp_path)
    configs = [_compose(f"hydra.sweep.dir={tmp_path / name}") for name in ("a", "b")]
    cfg = configs[0]  # two workers, each its own sweep folder, one study
    HydraConfig.instance().set_config(cfg)
    workers = [SweepCallback(), SweepCallback()]
    for w, c in zip(workers, configs, strict=True):
        w.on_multirun_start(c)
    assert workers[0].parent_run_id == workers[1].parent_run_id
    shared = OptunaStudy(cfg).load()
    for accuracy in (0.5, 0.7):  # two trials, as the workers ran them
        trial = shared.ask({"bottleneck": IntDistribution(2, 64)})
        metrics = dict.fromkeys(["test_accuracy", "test_loss", "test_reconstruction_mse",
                                 "train_seconds"], accuracy)  # fmt: skip
        trial.set_user_attr("result", {"status": "FINISHED", "val_accuracy": accuracy, "seed": 42,
                                       "dropout": 0.2, "bottleneck": trial.params["bottleneck"],
                                       **metrics})  # fmt: skip
        shared.tell(trial, accuracy)
    finished = []
    real_finish = parent.finish
    monkeypatch.setattr(parent, "finish", lambda *a: finished.append(1) or real_finish(*a))
    barrier = threading.Barrier(2)

    def end(worker: SweepCallback, config) -> None:
        barrier.wait()
        worker.on_multirun_end(config)

    pairs = zip(workers, configs, strict=True)
    threads = [threading.Thread(target=end, args=pair) for pair in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert finished == [1]
    run = MlflowClient().get_run(workers[0].parent_run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["trials_complete"] == 2
    assert optuna.load_study(study_name=OptunaStudy(cfg).name, storage=OptunaStudy(cfg).url)


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
    four trials between them, each in exactly one child run of one parent."""
    storage = postgres.rsplit("/", 1)[0] + "/optuna"
    args = [sys.executable, "-m", "src.train", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4",
            f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=shared", *TINY,
            "-m"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_server}
    out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    workers = [subprocess.Popen(args, cwd=project, env=env, **out) for _ in range(2)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    study = _study(storage)
    trials = counted(study.trials)  # a surplus trial (never launched) is not counted
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    ran = [sum(f"] trial {n}: " in out for out in outputs) for n in range(4)]
    told = [f"{t.number} {t.state.name} {t.params} {t.user_attrs}" for t in study.trials]
    lines = [[s for s in out.splitlines() if any(w in s for w in ("trial", "WARN", "ERR", "Warn"))]
             for out in outputs]  # fmt: skip
    # each trial ran in one worker: its progress line, e.g. [2/4] trial 1:
    assert ran == [1] * 4, "\n".join([*told, *lines[0], "--- worker 2:", *lines[1]])
    assert all(out.count("] trial ") >= 1 for out in outputs)  # both worked
    parent, children = _family(MlflowClient(tracking_uri=tracking_server))
    assert sorted(int(c.data.tags["optuna_trial"]) for c in children) == list(range(4))
    assert all(c.info.status == "FINISHED" for c in children)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_trial_val_accuracy"] == pytest.approx(study.best_value)
    # one of the workers finished the parent and registered the champion: one version
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
