"""What runs inside one job of a sweep or search (src.train), apart from the driver's code: its
run name, its trial's tags and pruning, and the result.json the driver reads."""

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from src.files import write_json
from src.sweeps.context import SweepContext
from src.sweeps.summary import short_number

log = logging.getLogger(__name__)
SHORT_NAMES = {"bottleneck": "b", "dropout": "d", "seed": "s"}


def trial_number(ctx: SweepContext | None) -> int | None:
    """This job's trial number when it is a trial of a search (the sweeper's job number)."""
    if ctx is None or ctx.study is None:
        return None
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.num


def point_name(overrides: list[str], swept: list[str]) -> str:
    """A sweep point's run name: the values of the keys the sweep varies, short enough for the
    MLflow UI's run column (b16-d0.5-s1, labels_per_class=10-finetune=True-s0: a dotted key by
    its last part); every override when the sweep varies none."""
    parts = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key in swept:
            value, short = short_number(value), SHORT_NAMES.get(key)
            parts.append(short + value if short else f"{key.rsplit('.', 1)[-1]}={value}")
    return "-".join(parts) or ",".join(overrides)


def run_name(ctx: SweepContext | None, overrides: list[str], single: str) -> str:
    """The MLflow run name of this job: its point (t<trial>- first in a search), or `single`
    (Hydra's override_dirname) outside a sweep."""
    if ctx is None:
        return single or "train"
    name = point_name(overrides, ctx.swept) or "train"
    trial = trial_number(ctx)
    return name if trial is None else f"t{trial}-{name}"


def trial_tags(ctx: SweepContext | None) -> dict[str, str]:
    """MLflow tags of a trial's run: its study and trial number; none outside a search."""
    number = trial_number(ctx)
    return {} if number is None else {"optuna_study": ctx.study, "optuna_trial": str(number)}


def pruning_callbacks(ctx: SweepContext | None) -> list:
    """[a Keras callback reporting validation accuracy to this job's trial after each epoch,
    pruned by the study's pruner] in a search's job, else []."""
    number = trial_number(ctx)
    if number is None:
        return []
    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from optuna_integration import KerasPruningCallback

    from src.sweeps.optuna_study import MONITOR, shared_storage, shared_study

    storage = shared_storage(ctx.storage)
    study_id = storage.get_study_id_from_name(ctx.study)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    study = shared_study(ctx.storage, ctx.study)  # the pruner reads only what changed
    study.pruner = instantiate(HydraConfig.get().sweeper.pruner) or optuna.pruners.NopPruner()
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


def end_lost_run(experiment_name: str, study: str, number: int,
                 why: str = "worker lost (no heartbeat); trial retried") -> None:  # fmt: skip
    """End KILLED the MLflow run of a trial whose worker or job died (it was left RUNNING)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id],
                              f"tags.optuna_study = '{study}' AND tags.optuna_trial = '{number}' "
                              "AND attributes.status = 'RUNNING'")  # fmt: skip
    for run in runs:
        end_killed(run.info.run_id, why)


def end_killed(run_id: str, why: str) -> None:
    """End a trial's MLflow run KILLED, with `why` as its error tag."""
    from mlflow import MlflowClient

    MlflowClient().set_tag(run_id, "error", why)
    MlflowClient().set_terminated(run_id, "KILLED")


def failure(error: BaseException) -> str:
    """A failed point's error as its result.json and the sweep's last line give it; when the
    MLflow tracking server stopped answering (MLflow's retries exhausted), which server and
    what to do."""
    message = str(error)
    if type(error).__name__ != "MlflowException" or "Max retries exceeded" not in message:
        return f"{type(error).__name__}: {error}"
    import mlflow

    return (f"MLflow tracking server {mlflow.get_tracking_uri()} not answering (MLflow gave up "
            "retrying): start it again (docs/tracking.md), then run the same command again; "
            "the points that finished are kept")  # fmt: skip


def write_result(out: Path, cfg: DictConfig, status: str, **fields: Any) -> None:
    """result.json in the job folder: what the driver summarises, with or without MLflow."""
    point = {k: cfg[k] for k in ("bottleneck", "dropout", "seed")}
    write_json(out / "result.json", {"status": status, **point, **fields})
