"""The champion: the best run of the best point, both chosen on validation accuracy (never on
test accuracy), registered with the alias `champion` when it beats the current one on the
same prepared data."""

import contextlib
import io
import logging
from typing import Any

from src.sweeps.summary import identity

log = logging.getLogger(__name__)
ALIAS = "champion"


def candidate(rows: list[dict], points: list[dict], keys: list[str]) -> dict | None:
    """The FINISHED run of the best point with the highest validation accuracy."""
    if not points:
        return None
    best = identity(points[0], keys)
    done = [r for r in rows if r["status"] == "FINISHED" and identity(r, keys) == best]
    return max((r for r in done if r.get("run_id")), key=lambda r: r["val_accuracy"], default=None)


def current(client: Any, model_name: str) -> Any | None:
    """The model version that has the alias now, if any."""
    try:
        return client.get_model_version_by_alias(model_name, ALIAS)
    except Exception:  # no registered model or no alias yet
        return None


def stays(client: Any, version: Any, best: dict) -> str | None:
    """Why the current champion `version` keeps its alias against `best`, or None if it moves."""
    if version is None:
        return None
    run = client.get_run(version.run_id)
    data_hash, val = run.data.tags.get("data_hash"), run.data.metrics.get("val_accuracy")
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


def version_of(client: Any, best: dict, model_name: str) -> Any | None:
    """The registered version of `best`'s logged classifier: an existing one (another worker of
    the same search may have just registered it), or a new one; None if it logged none."""
    import mlflow

    same = client.search_model_versions(f"name = '{model_name}' AND run_id = '{best['run_id']}'")
    if same:
        return same[0]
    run = client.get_run(best["run_id"])
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{best['run_id']}' AND name = 'classifier'",
    )
    if not models:
        return None
    said = io.StringIO()  # MLflow prints "Successfully registered model ..." and "Created
    with contextlib.redirect_stderr(said):  # version ...", which the champion line says too
        version = mlflow.register_model(models[0].model_uri, model_name)
    for line in said.getvalue().splitlines():
        if line.strip() and not line.startswith(("Successfully registered", "Created version")):
            log.warning("%s", line)
    return version


def describe(best: dict, top: dict) -> str:
    """The model version's description: the run, its point's means and its data."""
    return (f"{best['point']} seed {best['seed']}: validation accuracy "
            f"{best['val_accuracy']:.4f}, test accuracy {best['test_accuracy']:.4f}; point mean "
            f"over {top['n']} seed(s): validation {top['val_accuracy_mean']:.4f}, test "
            f"{top['test_accuracy_mean']:.4f}; data hash {best.get('data_hash')}")  # fmt: skip


def register(
    rows: list[dict], points: list[dict], model_name: str, keys: list[str]
) -> dict | None:
    """Move the alias to the candidate if it beats the current champion, else log why it
    stays. Returns the run the alias moved to."""
    from mlflow import MlflowClient

    client = MlflowClient()
    best = candidate(rows, points, keys)
    if best is None:
        return None
    old = current(client, model_name)
    if reason := stays(client, old, best):
        log.info("champion of %s stays: %s", model_name, reason)
        return None
    version = version_of(client, best, model_name)
    if version is None:
        log.warning("no logged classifier for run %s; no champion registered", best["run_id"])
        return None
    if old is not None:  # the old champion's run loses its tag
        with contextlib.suppress(Exception):
            client.delete_tag(old.run_id, ALIAS)
    client.set_registered_model_alias(model_name, ALIAS, version.version)
    client.update_model_version(model_name, version.version, description=describe(best, points[0]))
    client.set_tag(best["run_id"], ALIAS, "true")
    log.info("champion: %s (validation accuracy %.4f; test %.4f) registered as %s version %s, "
             "alias champion", best["point"], best["val_accuracy"], best["test_accuracy"],
             model_name, version.version)  # fmt: skip
    return best
