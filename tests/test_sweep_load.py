"""The search's bookkeeping under load, bounded (benchmarks/sweep_load.py measures it at
scale): workers of the real sweeper, callback, study and tracking share one study on PostgreSQL
and one MLflow server, each trial's training a test double of known value
(benchmarks/sweep_load_worker.py); nothing is lost or counted twice, also when a worker is
killed with SIGKILL part-way and restarted."""

import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from benchmarks.sweep_load import run_scale
from src.sweeps.optuna_study import OptunaStudy
from tests.conftest import ROOT

WORKERS, TRIALS = 8, 60


@pytest.mark.e2e
def test_nothing_lost_or_doubled_with_a_quarter_killed(postgres, tracking_server, tmp_path):
    """A quarter of the workers killed with SIGKILL a third of the way and restarted: exactly
    TRIALS trials COMPLETE or PRUNED, one child run each, under one parent finished once; the
    champion registered once, the best trial by validation; no run left RUNNING."""
    r = run_scale(postgres, tracking_server, tmp_path, WORKERS, TRIALS, kill=True, grace=10)
    assert r["killed"] == WORKERS // 4 and r["exit_codes"] == [0] * WORKERS, r
    assert r["complete"] + r["pruned"] == TRIALS and r["complete"] and r["pruned"], r
    assert r["lost"] == r["duplicated"] == 0, r
    assert r["parents"] == 1 and r["parent_status"] == ["FINISHED"], r
    assert r["parent_finishes"] == 1, r
    assert r["model_versions"] == 1 and r["champion_is_best"], r
    assert r["running_runs"] == 0, r


def test_a_worker_that_joins_a_finished_search_leaves_its_parent_finished(tmp_path):
    """A worker started once the study has all its trials (a late Slurm array task) does not
    reopen the parent: it could not finish it again, and the parent stayed RUNNING."""
    storage = f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}"
    overrides = ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=1", storage]
    with initialize_config_dir(str(ROOT / "conf"), job_name="train", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    client = MlflowClient()
    experiment = client.create_experiment(f"late-{tmp_path.name}")
    search = OptunaStudy(cfg)
    run_id = search.parent_run(
        client, experiment, lambda: client.create_run(experiment).info.run_id
    )
    study = search.load()
    study.tell(study.ask(), 0.9)
    client.set_terminated(run_id, "FINISHED")  # as the worker that ran the trial finished it
    assert search.parent_run(client, experiment, lambda: "a second parent") == run_id
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_result_for_a_trial_failed_meanwhile_is_dropped(tmp_path):
    """Another worker failed the trial while its job ran (its heartbeat was late by more than
    the grace period) and runs it again: the late result is dropped and its MLflow run ends
    KILLED, so that the point has one FINISHED run (the retry's); the worker goes on."""
    import optuna

    from src.sweeps.optuna_sweeper import tell

    client = MlflowClient()
    run = client.create_run(client.create_experiment(f"overtaken-{tmp_path.name}"))
    client.set_terminated(run.info.run_id, "FINISHED")  # as the trial's job ended it
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # as fail_stale_trials elsewhere
    result = {"status": "FINISHED", "val_accuracy": 0.9, "run_id": run.info.run_id}
    assert not tell(study, trial, result)
    assert study.trials[0].state.name == "FAIL" and "result" not in study.trials[0].user_attrs
    assert client.get_run(run.info.run_id).info.status == "KILLED"
