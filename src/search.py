"""Bayesian search for `python -m src.train hydra/sweeper=optuna -m` (docs/search.md): a Hydra
sweeper on an Optuna study, and the pruning callback its trials train with.

The sweeper runs one trial at a time through Hydra's launcher, as job number = trial number, so
that every job folder is `<sweep dir>/<trial number>`. It tells its jobs the study through the
environment (as src.sweep tells them the parent MLflow run); a job then reports the classifier's
validation accuracy after every epoch to its trial in the study's storage, and the study's
pruner may stop it there. Several workers (the same command in other processes or machines, on
the same storage and study) share the study: together they run `n_trials` trials.

Optuna is imported only inside functions: the DVC stages and grid sweeps never load it.
"""

import functools
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from src.config import config_hash

log = logging.getLogger(__name__)

STUDY_ENV = "AE_CLASSIFY_OPTUNA_STUDY"  # the study of a trial's job: set by the sweeper
STORAGE_ENV = "AE_CLASSIFY_OPTUNA_STORAGE"  # and its storage URL
MONITOR = "val_accuracy"  # what a trial reports each epoch, and what the study maximises


def is_search(config: DictConfig) -> bool:
    """Whether a multirun config sweeps with this module's Optuna sweeper."""
    return config.hydra.runtime.choices.get("hydra/sweeper") == "optuna"


def flat_params(params: Any, prefix: str = "") -> dict[str, Any]:
    """hydra.sweeper.params with dotted keys: one added on the command line
    (+hydra.sweeper.params.classify.learning_rate=...) arrives nested."""
    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params)
    flat = {}
    for key, value in (params or {}).items():
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def absolute_sqlite(url: str) -> str:
    """A relative SQLite URL made absolute, so that jobs in other folders find the same file."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/"):
        return url
    return prefix + str(Path(url.removeprefix(prefix)).resolve())


def study_identity(config: DictConfig) -> tuple[str, str]:
    """(storage URL, study name) of a search. A null study_name becomes the job's name and a
    hash of the command's overrides and search space: the same command continues its study."""
    s = config.hydra.sweeper
    name = s.study_name
    if name is None:
        identity = {"overrides": sorted(config.hydra.overrides.task),
                    "params": flat_params(s.params), "direction": s.direction}  # fmt: skip
        name = f"{config.hydra.job.name}-{config_hash(OmegaConf.create(identity))[:8]}"
    return absolute_sqlite(s.storage), name


def parent_key(config: DictConfig) -> str:
    """The `sweep_key` tag of a study's parent MLflow run."""
    storage, name = study_identity(config)
    return config_hash(OmegaConf.create({"storage": storage, "study": name}))


PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attribute naming its parent MLflow run
PARENT_WAIT_SECONDS = 60.0  # how long a worker waits for the study's creator to name it


def parent_run(config: DictConfig, create: Callable[[], str]) -> str:
    """The one parent MLflow run of the search's study, for every worker: its id is a user
    attribute of the study. The worker whose create_study makes the study (the storage lets only
    one) calls `create` and records the id; the others wait for it. A study without one, or
    whose run was deleted, gets a new run."""
    import optuna
    from mlflow import MlflowClient

    url, name = study_identity(config)
    storage = rdb_storage(url)
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction=config.hydra.sweeper.direction
        )
        wait = 0.0
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        wait = PARENT_WAIT_SECONDS if not study.get_trials(deepcopy=False) else 0.0
    deadline = time.monotonic() + wait
    while (run_id := study.user_attrs.get(PARENT_ATTR)) is None and time.monotonic() < deadline:
        time.sleep(0.5)  # a worker that has just made the study is creating the run
    client = MlflowClient()
    run = client.get_run(run_id).info if run_id is not None else None
    if run is None or run.lifecycle_stage == "deleted":
        run_id = create()
        study.set_user_attr(PARENT_ATTR, run_id)
    elif run.status != "RUNNING":  # resumed, or more trials
        client.update_run(run_id, status="RUNNING")
    return run_id


def safe_url(url: str) -> str:
    """A storage URL without its password, for tags and logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def distribution(override: Any) -> Any:
    """The Optuna distribution of a sweep override in Hydra's syntax (as hydra-optuna-sweeper
    reads it): choice(...) categorical, range(...) stepped, interval(...) continuous, an int()
    cast for integers, tag(log, ...) for a log scale."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, RangeSweep):  # the values the grid would run, start to last
        last = list(override.sweep_iterator())[-1]
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(value.start, last, step=value.step)
        return FloatDistribution(value.start, last, step=value.step)
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space Optuna can sample")


def suggest(trial: Any, name: str, dist: Any) -> Any:
    """Sample `name` from `dist` through the trial's public suggest API."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    kind = trial.suggest_int if isinstance(dist, IntDistribution) else trial.suggest_float
    return kind(name, dist.low, dist.high, step=dist.step, log=dist.log)


def seeded_per_trial(factory: Callable[..., Any], seed: int) -> Any:
    """A sampler that samples trial n with `factory(seed=seed + n)`: a seeded study is
    reproducible, and workers sharing a study never draw the same values from one seed."""
    from optuna.samplers import BaseSampler

    class PerTrialSeed(BaseSampler):
        def __init__(self) -> None:
            self.sampler = factory(seed=seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            self.sampler = factory(seed=seed + trial.number)
            self.sampler.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict:
            return self.sampler.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, space: dict) -> dict:
            return self.sampler.sample_relative(study, trial, space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return self.sampler.sample_independent(study, trial, name, dist)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self.sampler.after_trial(study, trial, state, values)

    return PerTrialSeed()


def rdb_storage(url: str, **kwargs: Any) -> Any:
    """Optuna's RDBStorage on `url` (an SQLite file's folder made first). Workers that start
    together on a new database race to create its tables; the loser tries again once they
    exist."""
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import SQLAlchemyError

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        try:
            return RDBStorage(url, **kwargs)
        except SQLAlchemyError as e:
            if attempt == 2:
                raise
            log.info("storage not ready (%s); trying again", str(e).splitlines()[0])
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


class TrialFailed(Exception):
    """A trial's job failed (its result.json says why): the trial ends FAIL, the search goes on."""


def counted(trials: list) -> list:
    """The trials that use the study's budget: all but those retried after their worker died
    (their retry counts instead) and surplus ones that were never launched."""
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retried = {n for t in trials for n in Retry.retry_history(t)}
    return [t for t in trials if t.number not in retried and not t.user_attrs.get("surplus")]


def job_result(ret: Any) -> dict[str, Any]:
    """A job's result.json (src.train writes it, whatever happened), or why there is none."""
    path = Path(ret.hydra_cfg.hydra.runtime.output_dir) / "result.json"
    if path.is_file():
        return json.loads(path.read_text())
    try:
        ret.return_value  # noqa: B018 - raises the job's exception
        error = "no result"
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    return {"status": "FAILED", "error": error}


class OptunaSweeper(Sweeper):
    """Hydra sweeper on an Optuna study (keys as hydra-optuna-sweeper's): one trial at a time
    through the launcher, until the study has n_trials trials over all its workers."""

    def __init__(
        self,
        n_trials: int,
        direction: str,
        storage: str,
        study_name: str | None,
        sampler: Any,
        pruner: Any,
        params: dict[str, str] | None,
        heartbeat_interval: int,
        grace_period: int | None,
        max_retry: int | None,
    ) -> None:
        self.n_trials = n_trials
        self.direction = direction
        self.sampler = sampler  # a partial (_partial_: true): seeded again for every trial
        self.pruner = pruner
        self.params = flat_params(params)
        self.heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
        self.max_retry = max_retry
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.current: int | None = None  # the trial this worker runs now

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list:
        import warnings

        import optuna
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        space, fixed = self.search_space(arguments)
        url, name = study_identity(self.config)
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)
        storage = rdb_storage(url, **self.heartbeat, heartbeat_stale_trial_callback=self.lost)
        sampler = self.sampler
        if isinstance(sampler, functools.partial):  # _partial_: true, as conf/ has it
            seed = sampler.keywords.get("seed")
            sampler = sampler() if seed is None else seeded_per_trial(sampler, seed)
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    pruner=self.pruner or optuna.pruners.NopPruner(),
                                    direction=self.direction, load_if_exists=True)  # fmt: skip
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("study %s in %s: %d trials over all workers; search space %s", name,
                 safe_url(url), self.n_trials, {k: str(v) for k, v in space.items()})  # fmt: skip
        os.environ[STUDY_ENV], os.environ[STORAGE_ENV] = name, url
        returns: list = []
        try:
            while (step := self.next_step(study)) != "done":
                if step == "wait":  # other workers' trials: finished, or failed by heartbeat
                    time.sleep(min(5, self.heartbeat["heartbeat_interval"]))
                    optuna.storages.fail_stale_trials(study)
                    continue
                study.optimize(lambda t: self.objective(t, space, fixed, returns), n_trials=1,
                               catch=(TrialFailed,))  # fmt: skip
                self.current = None
        except (KeyboardInterrupt, SystemExit):
            if self.current is not None:  # interrupted: the same command runs it again
                fail = optuna.trial.TrialState.FAIL
                study.tell(self.current, state=fail, skip_if_finished=True)
                if (trial := study.get_trials(deepcopy=False)[self.current]).state == fail:
                    self.retry(study, trial)
            raise
        finally:
            os.environ.pop(STUDY_ENV, None)
            os.environ.pop(STORAGE_ENV, None)
        states = Counter(t.state.name for t in counted(study.get_trials(deepcopy=False)))
        log.info("study %s: %s", name, ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        return returns

    def search_space(self, arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
        """(distribution per key, fixed overrides): hydra.sweeper.params and the command's
        sweep overrides (a=1,2 or choice/range/interval) are searched; the rest is fixed."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        params = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()])
        space, fixed = {}, []
        for override in [*params, *parser.parse_overrides(arguments)]:
            if override.is_sweep_override():
                space[override.get_key_element()] = distribution(override)
            else:
                space.pop(override.get_key_element(), None)  # the command fixes it
                fixed.append(override.input_line)
        return space, fixed

    def next_step(self, study: Any) -> str:
        """'run' while the study has trials to run, 'wait' while only other workers' trials
        are running (they finish, or fail by heartbeat and are retried), else 'done'."""
        from optuna.trial import TrialState

        trials = counted(study.get_trials(deepcopy=False))
        states = Counter(t.state for t in trials)
        if states[TrialState.WAITING] or len(trials) < self.n_trials:
            return "run"
        beating = self.heartbeat["heartbeat_interval"] is not None  # else a dead one never ends
        return "wait" if states[TrialState.RUNNING] and beating else "done"

    def objective(self, trial: Any, space: dict, fixed: list[str], returns: list) -> float:
        """Launch the trial's job (job number = trial number); its validation accuracy."""
        import optuna
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

        self.current = trial.number
        trials = trial.study.get_trials(deepcopy=False)
        earlier = [t for t in counted(trials) if t.number < trial.number]
        if Retry.retried_trial_number(trials[trial.number]) is None and (
            len(earlier) >= self.n_trials
        ):
            trial.set_user_attr("surplus", True)  # another worker took the last trial first
            raise TrialFailed("surplus trial: the study had its trials already; not launched")
        params = {name: suggest(trial, name, dist) for name, dist in space.items()}
        overrides = [*fixed, *(f"{k}={v}" for k, v in params.items())]
        try:
            [ret] = self.launcher.launch([overrides], initial_job_idx=trial.number)
        except Exception as e:  # e.g. a cluster job that died: the search goes on
            raise TrialFailed(f"launch failed: {type(e).__name__}: {e}") from e
        returns.append([ret])
        result = job_result(ret)
        trial.set_user_attr("result", result)
        if result["status"] == "PRUNED":
            raise optuna.TrialPruned(result.get("error"))
        if result["status"] != "FINISHED":
            raise TrialFailed(result.get("error"))
        return result[MONITOR]

    def lost(self, study: Any, trial: Any) -> None:
        """A trial whose worker stopped beating (killed): retried; its MLflow run ends KILLED."""
        log.warning("trial %d lost its worker (no heartbeat): failed, and retried as a new "
                    "trial", trial.number)  # fmt: skip
        self.retry(study, trial)
        end_lost_run(self.config, study.study_name, trial.number)


def end_lost_run(config: DictConfig, study_name: str, number: int) -> None:
    """End the MLflow run of a trial whose worker died KILLED (it was left RUNNING)."""
    if not config.mlflow.enabled:
        return
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(config.mlflow.experiment_name)
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.optuna_study = '{study_name}' AND tags.optuna_trial = '{number}' "
        "AND attributes.status = 'RUNNING'",
    )
    for run in runs:
        client.set_tag(run.info.run_id, "error", "worker lost (no heartbeat); trial retried")
        client.set_terminated(run.info.run_id, "KILLED")


# --- in a trial's job (src.train) -------------------------------------------------------------


def trial_number() -> int | None:
    """This job's trial number when it is a trial of a search (the sweeper's job number)."""
    if not os.environ.get(STUDY_ENV) or not HydraConfig.initialized():
        return None
    return HydraConfig.get().job.num


def trial_tags() -> dict[str, str]:
    """MLflow tags of a trial's run: its study and trial number; none outside a search."""
    number = trial_number()
    if number is None:
        return {}
    return {"optuna_study": os.environ[STUDY_ENV], "optuna_trial": str(number)}


def pruning_callbacks() -> list:
    """[a Keras callback reporting validation accuracy to this job's trial after each epoch,
    pruned by the study's pruner] in a search's job, else []."""
    number = trial_number()
    if number is None:
        return []
    import optuna
    from hydra.utils import instantiate
    from optuna_integration import KerasPruningCallback

    storage = optuna.storages.get_storage(os.environ[STORAGE_ENV])
    name = os.environ[STUDY_ENV]
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(name), number
    )
    pruner = instantiate(HydraConfig.get().sweeper.pruner) or optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    return [KerasPruningCallback(optuna.trial.Trial(study, trial_id), MONITOR)]


def is_pruned(error: BaseException) -> bool:
    """Whether `error` is Optuna's TrialPruned (without importing Optuna when it is not)."""
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(error, optuna.TrialPruned)


def end_pruned_run(error: BaseException) -> None:
    """End the active MLflow run of a pruned trial KILLED, tagged `pruned` with the reason."""
    import mlflow

    if mlflow.active_run():
        mlflow.set_tag("pruned", str(error) or "pruned")
        mlflow.end_run("KILLED")


# --- the sweep's summary and parent run (src.sweep) -------------------------------------------


def load_study(config: DictConfig) -> Any:
    import optuna

    storage, name = study_identity(config)
    return optuna.load_study(study_name=name, storage=storage)


def rows(config: DictConfig) -> list[dict[str, Any]]:
    """One summary row per trial of the study, over all its workers (src.sweep's columns)."""
    study = load_study(config)
    out = []
    for t in counted(study.get_trials(deepcopy=False)):
        point = ",".join(f"{k}={v}" for k, v in t.params.items())
        row = {"point": f"trial {t.number} ({point})", **t.params}
        status = {"COMPLETE": "FINISHED", "PRUNED": "PRUNED"}.get(t.state.name, "FAILED")
        default = {"status": status, "error": None if status != "FAILED" else t.state.name}
        row.update(t.user_attrs.get("result", default))
        out.append(row)
    return out


def log_study(config: DictConfig, client: Any, run_id: str) -> None:
    """On the parent run: the study's best trial (tags, metrics) and Optuna's plots."""
    import optuna
    from optuna import visualization

    study = load_study(config)
    storage, name = study_identity(config)
    client.set_tag(run_id, "optuna_study", name)
    client.set_tag(run_id, "optuna_storage", safe_url(storage))
    client.set_tag(run_id, "optuna_n_trials", str(config.hydra.sweeper.n_trials))
    client.set_tag(run_id, "optuna_space", json.dumps(flat_params(config.hydra.sweeper.params)))
    states = Counter(t.state.name.lower() for t in counted(study.get_trials(deepcopy=False)))
    for state in ("complete", "pruned", "fail"):
        client.log_metric(run_id, f"trials_{state}", states[state])
    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if not complete:
        return
    best = study.best_trial
    client.set_tag(run_id, "best_trial", str(best.number))
    client.set_tag(run_id, "best_trial_params", json.dumps(best.params))
    if run := best.user_attrs.get("result", {}).get("run_id"):
        client.set_tag(run_id, "best_trial_run_id", run)
    client.log_metric(run_id, f"best_trial_{MONITOR}", best.value)
    plots = {
        "optimization_history": visualization.plot_optimization_history,
        "param_importances": visualization.plot_param_importances,
        "intermediate_values": visualization.plot_intermediate_values,
    }
    for file, plot in plots.items():
        try:
            client.log_figure(run_id, plot(study), f"optuna/{file}.html")
        except Exception as e:  # e.g. importances need two finished trials with varied params
            log.warning("no Optuna %s plot: %s", file, e)
