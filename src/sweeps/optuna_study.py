"""A search's study (hydra/sweeper=optuna): one Optuna study on a storage that every worker
shares, one parent MLflow run named in the study, finished once by the worker that claims it.

Optuna is imported only inside functions: the DVC stages and grid sweeps never load it."""

import functools
import json
import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.config import config_hash, flatten
from src.sweeps.context import SweepContext
from src.sweeps.study import Study, swept_keys

log = logging.getLogger(__name__)
MONITOR = "val_accuracy"  # what a trial reports each epoch, and what the study maximises
PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attribute naming its parent MLflow run
PARENT_WAIT_SECONDS = 60.0  # how long a worker waits for the study's creator to name it


def absolute_sqlite(url: str) -> str:
    """A relative SQLite URL made absolute, so that jobs in other folders find the same file."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/"):
        return url
    return prefix + str(Path(url.removeprefix(prefix)).resolve())


def safe_url(url: str) -> str:
    """A storage URL without its password, for tags and logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def quiet_optuna() -> None:
    """Optuna's INFO lines ("A new study created", then "Using an existing study" from the
    sweeper) only with hydra.verbose=optuna: the sweeper logs one line of its own per study."""
    import optuna  # noqa: F401  (sets up its logger, at INFO, on import)

    from src.runtime import quiet_library

    quiet_library("optuna", logging.WARNING)


def rdb_storage(url: str, **kwargs: Any) -> Any:
    """Optuna's RDBStorage on `url` (an SQLite file's folder made first). Workers that start
    together on a new database race to create its tables; the loser tries again."""
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import SQLAlchemyError

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # a pooled connection is tested before use: after the database restarts, no call fails;
    # one stays open (a second, the heartbeat's at the same moment, is closed after use): with
    # SQLAlchemy's 5, 32 workers held more than PostgreSQL's default 100 connections
    kwargs.setdefault("engine_kwargs", {"pool_pre_ping": True, "pool_size": 1})
    for attempt in range(3):
        try:
            return RDBStorage(url, **kwargs)
        except SQLAlchemyError as e:
            if attempt == 2:
                raise
            log.info("storage not ready (%s); trying again", str(e).splitlines()[0])
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


@functools.cache
def shared_storage(url: str) -> Any:
    """One RDBStorage per database and process for reading and reporting: each new one opens
    its own connection pool (and checks the schema), so a worker that made one per progress line
    or trial piled up connections."""
    return rdb_storage(url)


def counted(trials: list) -> list:
    """The trials that use the study's budget: all but those retried after their worker died
    (their retry counts instead) and surplus ones that were never launched."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retried = {n for t in trials for n in Retry.retry_history(t)}
    return [t for t in trials if t.number not in retried and not t.user_attrs.get("surplus")]


@functools.cache
def shared_study(url: str, name: str) -> Any:
    """One Study per study and process for reading and reporting: Optuna keeps the finished
    trials it has read, so that each progress line or pruning report reads only the trials that
    changed since; a new Study per trial read every trial again (at 400 trials, over a second of
    each trial)."""
    import optuna

    return optuna.load_study(study_name=name, storage=shared_storage(url))


def told_results(url: str, name: str) -> list[dict[str, Any]]:
    """The results of the study's counted trials that have been told, over all its workers."""
    trials = shared_study(url, name).get_trials(deepcopy=False)
    return [t.user_attrs["result"] for t in counted(trials) if "result" in t.user_attrs]


def claim(url: str, key: str) -> bool:
    """Compare-and-set in the study's database: True for the one caller whose insert of `key`
    succeeds, False for every other (its primary key refuses a second row)."""
    import sqlalchemy as sa

    table = sa.Table("ae_classify_claims", sa.MetaData(),
                     sa.Column("key", sa.String(255), primary_key=True))  # fmt: skip
    engine = sa.create_engine(url)
    try:
        try:
            table.create(engine, checkfirst=True)
        except sa.exc.SQLAlchemyError:  # another worker created it at the same moment
            pass
        with engine.begin() as connection:
            connection.execute(table.insert().values(key=key))
        return True
    except sa.exc.IntegrityError:
        return False
    finally:
        engine.dispose()


def has_work(study: Any, n_trials: int) -> bool:
    """Whether the study has trials left to run or running (resumed, or more trials): a worker
    that joins a search already done leaves its parent run as it is (reopened, it could not
    finish it again)."""
    trials = counted(study.get_trials(deepcopy=False))
    busy = any(t.state.name in ("RUNNING", "WAITING") for t in trials)
    return busy or len(trials) < int(n_trials)


class OptunaStudy(Study):
    """The study named by hydra.sweeper (or by the command), on its storage."""

    heatmaps = False

    def __init__(self, config: DictConfig) -> None:
        super().__init__(config)
        s = config.hydra.sweeper
        self.url, self.name = absolute_sqlite(s.storage), s.study_name
        if self.name is None:  # the same command continues its study
            identity = {"overrides": sorted(config.hydra.overrides.task),
                        "params": flatten(s.params or {}), "direction": s.direction}  # fmt: skip
            self.name = f"{config.hydra.job.name}-{config_hash(OmegaConf.create(identity))[:8]}"

    def key(self) -> str:
        return config_hash(OmegaConf.create({"storage": self.url, "study": self.name}))

    def context(self, parent_run_id: str | None) -> SweepContext:
        n_trials = int(self.config.hydra.sweeper.n_trials)
        return SweepContext(parent_run_id, swept_keys(self.config), False, self.name, self.url,
                            n_trials, time.time())  # fmt: skip

    def load(self, **kwargs: Any) -> Any:
        import optuna

        return optuna.load_study(study_name=self.name, storage=shared_storage(self.url), **kwargs)

    def create_or_load(self) -> tuple[Any, bool]:
        """(the study, whether this call created it: the storage lets only one caller)."""
        import optuna

        quiet_optuna()
        storage = shared_storage(self.url)  # not a pool of its own
        try:
            direction = self.config.hydra.sweeper.direction
            study = optuna.create_study(storage=storage, study_name=self.name, direction=direction)
        except optuna.exceptions.DuplicatedStudyError:
            return optuna.load_study(study_name=self.name, storage=storage), False
        with warnings.catch_warnings():  # experimental since Optuna 3.2, still in 5.1
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([MONITOR])  # optuna-dashboard's axis, not "Objective 0"
        return study, True

    def parent_run(self, client: Any, experiment_id: str, create: Callable[[], str]) -> str:
        """The study's one parent run, for every worker: the worker that created the study
        creates it and names it in the study; the others wait for the name. A study without one,
        or whose run was deleted, gets a new run."""
        study, created = self.create_or_load()
        new = not created and not study.get_trials(deepcopy=False)
        deadline = time.monotonic() + (PARENT_WAIT_SECONDS if new else 0.0)
        while (run_id := study.user_attrs.get(PARENT_ATTR)) is None and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)  # the worker that has just made the study is creating the run
        run = client.get_run(run_id).info if run_id is not None else None
        if run is None or run.lifecycle_stage == "deleted":
            run_id = create()  # which logs its name
            study.set_user_attr(PARENT_ATTR, run_id)
            return run_id
        if run.status != "RUNNING" and has_work(study, self.config.hydra.sweeper.n_trials):
            client.update_run(run_id, status="RUNNING")
        log.info("sweep parent run %s (%s) of study %s", run_id, run.run_name, self.name)
        return run_id

    def trials(self) -> list:
        return counted(self.load().get_trials(deepcopy=False))

    def rows(self) -> list[dict[str, Any]]:
        """One row per counted trial of the study, over all its workers."""
        rows = []
        for t in self.trials():
            point = ",".join(f"{k}={v}" for k, v in t.params.items())
            status = {"COMPLETE": "FINISHED", "PRUNED": "PRUNED"}.get(t.state.name, "FAILED")
            default = {"status": status, "error": None if status != "FAILED" else t.state.name}
            rows.append({"point": f"trial {t.number} ({point})", **t.params,
                         **t.user_attrs.get("result", default)})  # fmt: skip
        return rows

    def claim_finish(self, run_id: str) -> bool:
        """Of the workers that end with the study in the same state, exactly one finishes it."""
        state = sorted((t.number, t.state.name) for t in self.trials())
        key = f"{self.name}/{run_id}/{config_hash(OmegaConf.create({'s': state}))}"
        return claim(self.url, key)

    def log_extras(self, client: Any, run_id: str) -> None:
        """The study's name, space and trial counts; its best trial and Optuna's plots."""
        s = self.config.hydra.sweeper
        study = self.load()
        client.set_tag(run_id, "optuna_study", self.name)
        client.set_tag(run_id, "optuna_storage", safe_url(self.url))
        client.set_tag(run_id, "optuna_n_trials", str(s.n_trials))
        client.set_tag(run_id, "optuna_space", json.dumps(flatten(s.params or {})))
        states = Counter(t.state.name.lower() for t in counted(study.get_trials(deepcopy=False)))
        for state in ("complete", "pruned", "fail"):
            client.log_metric(run_id, f"trials_{state}", states[state])
        if states["complete"]:
            log_best_trial(client, run_id, study)


def log_best_trial(client: Any, run_id: str, study: Any) -> None:
    """The study's best trial (tags, metric) and Optuna's plots, on the parent run."""
    from optuna import visualization

    best = study.best_trial
    client.set_tag(run_id, "best_trial", str(best.number))
    client.set_tag(run_id, "best_trial_params", json.dumps(best.params))
    if run := best.user_attrs.get("result", {}).get("run_id"):
        client.set_tag(run_id, "best_trial_run_id", run)
    client.log_metric(run_id, f"best_trial_{MONITOR}", best.value)
    plots = {"optimization_history": visualization.plot_optimization_history,
             "param_importances": visualization.plot_param_importances,
             "intermediate_values": visualization.plot_intermediate_values}  # fmt: skip
    for file, plot in plots.items():
        try:
            client.log_figure(run_id, plot(study), f"optuna/{file}.html")
        except Exception as e:  # e.g. importances need two finished trials with varied params
            log.warning("no Optuna %s plot: %s", file, e)
