"""The Hydra sweeper of `python -m src.train hydra/sweeper=optuna -m` (docs/search.md), on
Optuna's ask-and-tell interface: ask the study for a trial, launch its job through Hydra's
launcher (job number = trial number), tell the study the job's validation accuracy. Several
workers (the same command elsewhere, on the same storage) share the study's n_trials."""

import functools
import logging
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from src.config import flatten
from src.runtime import first_line
from src.sweeps.optuna_study import (
    MONITOR,
    OptunaStudy,
    counted,
    quiet_optuna,
    rdb_storage,
    safe_url,
)
from src.sweeps.study import job_result

log = logging.getLogger(__name__)


def distribution(override: Any) -> Any:
    """The Optuna distribution of a sweep override in Hydra's syntax (as hydra-optuna-sweeper
    reads it): choice(...) categorical, range(...) stepped, interval(...) continuous, int() for
    integers, tag(log, ...) for a log scale."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution as Categorical
    from optuna.distributions import FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return Categorical(list(override.sweep_iterator()))
    if isinstance(value, RangeSweep):  # the values the grid would run, start to last
        last = list(override.sweep_iterator())[-1]
        ints = all(isinstance(v, int) for v in (value.start, value.stop, value.step))
        return (IntDistribution if ints else FloatDistribution)(value.start, last, step=value.step)
    if isinstance(value, IntervalSweep):
        ints = isinstance(value.start, int) and isinstance(value.end, int)
        kind = IntDistribution if ints else FloatDistribution
        return kind(value.start, value.end, log="log" in value.tags)
    raise ValueError(f"{override.input_line}: not a search space Optuna can sample")


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


@contextmanager
def heartbeat(storage: Any, trial: Any, interval: int | None) -> Iterator[None]:
    """Record the trial's heartbeat in the storage every `interval` seconds while it runs (what
    study.optimize does): a worker that dies stops beating, and its trial is retried."""
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception as e:  # the database away for a moment: beat again next time
                cause = first_line(e.__cause__ or e)  # Optuna's own message guesses wrong
                log.warning("trial %d: heartbeat not recorded: %s", trial.number, cause)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def search_space(params: dict, arguments: list[str], loader: Any) -> tuple[dict, list[str]]:
    """(distribution per key, fixed overrides): hydra.sweeper.params and the command's sweep
    overrides are searched; the rest is fixed, the command line winning."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=loader)
    space, fixed = {}, []
    searched = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    for override in [*searched, *parser.parse_overrides(arguments)]:
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            space.pop(override.get_key_element(), None)
            fixed.append(override.input_line)
    return space, fixed


def sampler_of(sampler: Any) -> Any:
    """The configured sampler; a partial (_partial_: true, as conf/ has it) seeded per trial."""
    if not isinstance(sampler, functools.partial):
        return sampler
    seed = sampler.keywords.get("seed")
    return sampler() if seed is None else seeded_per_trial(sampler, seed)


def asked(study: Any, space: dict[str, Any], storage: Any, interval: int | None) -> Any:
    """A new trial (or a retry) with its first heartbeat, then its values of `space` sampled:
    a worker killed between the trial's start and its first heartbeat (sampling takes a while)
    left it RUNNING for ever, never failed, and every worker waited for it at the end."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    trial = study.ask()
    if interval is not None:
        storage.record_heartbeat(trial._trial_id)
    for name, dist in space.items():  # as study.ask(space) samples them
        if isinstance(dist, CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial


def fail_unbeaten(study: Any, storage: Any) -> None:
    """Fail, and retry through the storage's stale-trial callback, the RUNNING trials older than
    the grace period that never recorded a heartbeat: their worker died between ask() creating
    the trial and its first beat, and Optuna's fail_stale_trials skips trials without one (in
    CI every worker then waited for such a trial until killed)."""
    from datetime import datetime, timedelta

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState

    grace = timedelta(seconds=storage.grace_period or 2 * storage.heartbeat_interval)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    old = {t._trial_id for t in running if datetime.now() - t.datetime_start > grace}
    if not old:
        return
    with _create_scoped_session(storage.scoped_session) as session:
        beaten = models.TrialHeartbeatModel.trial_id.in_(old)
        old -= {row.trial_id for row in session.query(models.TrialHeartbeatModel).filter(beaten)}
    for trial_id in sorted(old):
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(trial_id))
        except UpdateFinishedTrialError:  # another worker failed it first
            pass


def next_trial(study: Any, space: dict[str, Any], n_trials: int, storage: Any,
               interval: int | None) -> Any:  # fmt: skip
    """The next trial while the study has trials to run (a retry first); None when it has none,
    after waiting for other workers' running trials (they finish, or fail by heartbeat)."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    while True:
        if interval is not None:
            fail_stale_trials(study)
            fail_unbeaten(study, storage)
        trials = counted(study.get_trials(deepcopy=False))
        states = Counter(t.state for t in trials)
        if states[TrialState.WAITING] or len(trials) < n_trials:
            return asked(study, space, storage, interval)
        if not (states[TrialState.RUNNING] and interval is not None):
            return None
        time.sleep(min(5, interval))


def is_surplus(study: Any, trial: Any, n_trials: int) -> bool:
    """Whether another worker took the study's last trial first (a retry never is)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    trials = study.get_trials(deepcopy=False)
    earlier = [t for t in counted(trials) if t.number < trial.number]
    return Retry.retried_trial_number(trials[trial.number]) is None and len(earlier) >= n_trials


def tell(study: Any, trial: Any, result: dict[str, Any]) -> bool:
    """Tell the study how the trial's job ended: its validation accuracy, PRUNED or FAIL. False
    when another worker failed the trial meanwhile and runs it again (its heartbeat was late by
    more than grace_period: this worker or the database stalled): the result is dropped and
    its MLflow run ends KILLED."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        trial.set_user_attr("result", result)
    except UpdateFinishedTrialError:
        why = "failed meanwhile by another worker (no heartbeat for the grace period), run again"
        log.warning("trial %d: %s; its result is dropped", trial.number, why)
        if result.get("run_id"):  # not a second FINISHED run of the point
            from src.sweeps import job

            job.end_killed(result["run_id"], why)
        return False
    if result["status"] != "FINISHED":
        state = TrialState.PRUNED if result["status"] == "PRUNED" else TrialState.FAIL
        log.warning("trial %d %s: %s", trial.number, state.name, result.get("error"))
        study.tell(trial, state=state, skip_if_finished=True)
        return True
    study.tell(trial, result[MONITOR], skip_if_finished=True)  # progress: src.sweeps.progress
    return True


class OptunaSweeper(Sweeper):
    """Hydra sweeper on an Optuna study (keys as hydra-optuna-sweeper's), until the study has
    n_trials trials over all its workers."""

    def __init__(self, n_trials: int, direction: str, storage: str, study_name: str | None,
                 sampler: Any, pruner: Any, params: dict[str, str] | None,
                 heartbeat_interval: int | None, grace_period: int | None,
                 max_retry: int | None) -> None:  # fmt: skip
        self.n_trials, self.direction, self.pruner = n_trials, direction, pruner
        self.sampler = sampler  # a partial (_partial_: true): seeded again for every trial
        self.params = {k: str(v) for k, v in flatten(params or {}).items()}
        self.heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
        self.interval, self.max_retry = heartbeat_interval, max_retry

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:  # fmt: skip
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def open(self) -> Any:
        """The study, with this worker's sampler, pruner and heartbeat."""
        import optuna
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        quiet_optuna()
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)
        self.identity = OptunaStudy(self.config)
        self.storage = rdb_storage(self.identity.url, heartbeat_stale_trial_callback=self.lost,
                                   **self.heartbeat)  # fmt: skip
        pruner = self.pruner or optuna.pruners.NopPruner()
        return optuna.create_study(storage=self.storage, study_name=self.identity.name,
                                   sampler=sampler_of(self.sampler), pruner=pruner,
                                   direction=self.direction, load_if_exists=True)  # fmt: skip

    def sweep(self, arguments: list[str]) -> list:
        from optuna.exceptions import ExperimentalWarning

        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        # ask() warns that heartbeats are meant for optimize(): this sweeper beats itself
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        space, fixed = search_space(self.params, arguments, self.hydra_context.config_loader)
        study = self.open()
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("study %s in %s: %d trials over all workers; search space %s", study.study_name,
                 safe_url(self.identity.url), self.n_trials,
                 {k: str(v) for k, v in space.items()})  # fmt: skip
        returns = []
        while (trial := next_trial(study, space, self.n_trials, self.storage,
                                   self.interval)) is not None:  # fmt: skip
            returns.append(self.run(study, trial, fixed))
        states = Counter(t.state.name for t in counted(study.get_trials(deepcopy=False)))
        log.info("study %s: %s", study.study_name,
                 ", ".join(f"{n} {s}" for s, n in sorted(states.items())))  # fmt: skip
        return [r for r in returns if r]

    def run(self, study: Any, trial: Any, fixed: list[str]) -> list | None:
        """Launch the trial's job, interrupted: it fails and is retried, so that the same
        command runs it again; then tell the study. Returns the launcher's returns."""
        from optuna.trial import TrialState

        if is_surplus(study, trial, self.n_trials):
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            return None
        overrides = [*fixed, *(f"{k}={v}" for k, v in trial.params.items())]
        try:
            with heartbeat(self.storage, trial, self.interval):
                [ret] = self.launcher.launch([overrides], initial_job_idx=trial.number)
            result = job_result(ret.hydra_cfg.hydra.runtime.output_dir)
        except (KeyboardInterrupt, SystemExit):
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            self.retry(study, study.get_trials(deepcopy=False)[trial.number])
            raise
        except Exception as e:  # a cluster job ended without a result (scancel, time limit)
            why = " ".join(str(e).split("\n")[:2])  # submitit's: the job, its state
            ret, result = None, {"status": "FAILED", "error": f"job lost: {why}"}
            self.rerun(study, study.get_trials(deepcopy=False)[trial.number], f"job lost: {why}")
        tell(study, trial, result or {"status": "FAILED", "error": "no result"})
        return [ret] if ret else None

    def lost(self, study: Any, trial: Any) -> None:
        """A trial whose worker stopped beating (killed): retried; its MLflow run ends KILLED."""
        self.rerun(study, trial, "worker lost (no heartbeat)")

    def rerun(self, study: Any, trial: Any, why: str) -> None:
        """A trial that will not end by itself: run again as a new trial with its parameters (up
        to max_retry times); its MLflow run, if left RUNNING, ends KILLED."""
        log.warning("trial %d: %s; failed, and run again as a new trial", trial.number, why)
        self.retry(study, trial)
        if self.config.mlflow.enabled:
            from src.sweeps import job

            job.end_lost_run(self.config.mlflow.experiment_name, study.study_name, trial.number,
                             f"{why}; trial retried")  # fmt: skip
