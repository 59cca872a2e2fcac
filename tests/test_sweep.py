"""Sweeps: parent/child MLflow runs, autoencoder reuse, joblib, failures, summary, champion."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from src import data, train
from tests.conftest import (
    copy_project,
    free_port,
    make_cfg,
    mlflow_client,
    run_cli,
    wait_until_answers,
)

TINY = ["pretrain.epochs=2", "classify.epochs=2"]


def _runs(client: MlflowClient) -> list:
    exp = client.get_experiment_by_name("ae-classify")
    return client.search_runs([exp.experiment_id])


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A project after a 2x2 sweep with two parallel joblib jobs on one SQLite store."""
    project = copy_project(tmp_path_factory.mktemp("swept"))
    run_cli(
        project, "-m", "src.train", "bottleneck=4,8", "dropout=0.0,0.5", *TINY,
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "-m",
    )  # fmt: skip
    return project


@pytest.mark.e2e
def test_joblib_sweep_parent_children_reuse_summary_and_champion(swept):
    project = swept
    client = mlflow_client(project)
    runs = _runs(client)
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.info.run_name == "bottleneck=4,8 dropout=0.0,0.5 " + " ".join(TINY)
    assert parent.data.params["bottleneck"] == "4,8" and parent.data.params["dropout"] == "0.0,0.5"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4  # two parallel jobs on one SQLite file lost no run
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.info.run_name for c in children} == {  # the swept values only, not TINY's keys
        "b4-d0.0", "b4-d0.5", "b8-d0.0", "b8-d0.5",
    }  # fmt: skip
    assert {(c.data.params["bottleneck"], c.data.params["dropout"]) for c in children} == {
        ("4", "0.0"), ("4", "0.5"), ("8", "0.0"), ("8", "0.5"),
    }  # fmt: skip
    experiment = client.get_experiment_by_name("ae-classify")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not GenAI
    inputs = client.get_run(children[0].info.run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["digits-train"]
    assert inputs[0].dataset.digest == children[0].data.tags["data_hash"][:12]
    # each autoencoder trained once (by one child), reused by the other child with its bottleneck
    trained_by = {c.data.tags["autoencoder_run_id"] for c in children}
    assert len(trained_by) == 2 and trained_by <= {c.info.run_id for c in children}
    for b in ("4", "8"):
        assert len({c.data.tags["autoencoder_run_id"] for c in children
                    if c.data.params["bottleneck"] == b}) == 1  # fmt: skip

    # shared work: the raw baseline once for the data, PCA and its t-SNE map once per bottleneck
    reused = [set(k for k in c.data.tags if k.startswith("reused.")) for c in children]
    assert sum("reused.raw-baseline" in r for r in reused) == 3
    assert sum("reused.tsne-pca" in r for r in reused) == 2

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert {"summary/summary.csv", "summary/accuracy_heatmap.png"} <= artifacts
    sweep_dir = next(project.glob("multirun/*/*"))
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    logged = {c.info.run_id: c.data.metrics["test_accuracy"] for c in children}
    assert {r["run_id"]: float(r["test_accuracy"]) for r in rows} == pytest.approx(logged)
    assert all(r["status"] == "FINISHED" and not r["error"] for r in rows)
    assert (sweep_dir / "accuracy_heatmap.png").read_bytes()[:4] == b"\x89PNG"

    best = max(children, key=lambda c: c.data.metrics["val_accuracy"])  # chosen on validation
    version = client.get_model_version_by_alias("ae-classify-digits", "champion")
    assert version.run_id == best.info.run_id
    assert client.get_run(best.info.run_id).data.tags["champion"] == "true"


@pytest.mark.e2e
def test_champion_serves_over_http(swept):
    """`mlflow models serve` on the registered champion answers /invocations like the model."""
    from src import models

    client = mlflow_client(swept)
    champion = client.get_model_version_by_alias("ae-classify-digits", "champion")
    job = Path(client.get_run(champion.run_id).data.tags["output_dir"])
    local = models.load(job / "models/classifier.keras")
    prepared = np.load(next(swept.glob(".cache/prepared-*.npz")))
    x = prepared["x_test"][:16]
    lo, hi = prepared["pixel_range"]
    raw = x[..., 0] * (hi - lo) + lo  # raw pixels, (16, 8, 8) in 0..16, as load_digits gives them

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{swept / 'mlflow.db'}"}
    # mlflow execs `uvicorn` by name: find it beside this Python even in a venv not activated
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m",
           "models:/ae-classify-digits@champion", "--env-manager", "local",
           "--host", "127.0.0.1", "-p", str(port)]  # fmt: skip
    server = subprocess.Popen(cmd, cwd=swept, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{url}/ping", server, 120)  # it loads TensorFlow first
        request = urllib.request.Request(
            f"{url}/invocations", data=json.dumps({"inputs": raw.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
    finally:
        with contextlib.suppress(ProcessLookupError):  # the server's group may be gone already
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    served = answer["predictions"]  # one {class, class_name, probabilities} per image
    assert [p["class"] for p in served] == local.predict(x, verbose=0).argmax(1).tolist()


@pytest.mark.e2e
def test_failed_point_does_not_stop_the_sweep(project):
    # bottleneck=100 is larger than the 64 input pixels: that point fails inside its run
    proc = run_cli(project, "-m", "src.train", "bottleneck=4,100", *TINY, "-m", check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "1 of 2 sweep points failed" in last and "bottleneck=100" in last
    runs = {r.data.params.get("bottleneck"): r for r in _runs(mlflow_client(project))}
    assert runs["4"].info.status == "FINISHED" and "test_accuracy" in runs["4"].data.metrics
    assert runs["100"].info.status == "FAILED"
    assert "larger than the 64 input pixels" in runs["100"].data.tags["error"]
    parent = runs["4,100"]  # the parent run: the sweep's values as params
    assert parent.info.status == "FAILED"
    jobs = sorted(project.glob("multirun/*/*/[0-9]"))
    results = [json.loads((j / "result.json").read_text()) for j in jobs]
    assert [r["status"] for r in results] == ["FINISHED", "FAILED"]
    assert (jobs[0] / "models/classifier.keras").is_file()
    assert not (project / "models").exists()  # DVC outputs untouched


def test_data_cache_notices_a_dataset_file_replaced_in_place(tmp_path):
    path = tmp_path / "mine.npz"
    cfg = make_cfg("dataset=npz", f"dataset.path={path}", f"paths.cache={tmp_path / 'cache'}")
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (40, 6, 6)), y=np.arange(40) % 2)
    first, first_path = train.prepared_data(cfg)
    assert train.prepared_data(cfg)[1] == first_path  # unchanged file: the cache entry
    np.savez(path, x=rng.integers(0, 256, (60, 6, 6)), y=np.arange(60) % 2)  # replaced
    second, second_path = train.prepared_data(cfg)
    assert second_path != first_path and sum(len(second[f"y_{s}"]) for s in data.SPLITS) == 60


def test_autoencoder_key_depends_on_pretrain_settings_only():
    base = train.autoencoder_key(make_cfg(), "d")
    for override in ["dropout=0.5", "classify.epochs=7", "classify.freeze_encoder=false"]:
        assert train.autoencoder_key(make_cfg(override), "d") == base, override
    for override in ["pretrain.learning_rate=0.01", "pretrain.epochs=3", "bottleneck=8",
                     "seed=1", "model.hidden=[32]"]:  # fmt: skip
        assert train.autoencoder_key(make_cfg(override), "d") != base, override
    assert train.autoencoder_key(make_cfg(), "other data") != base


def test_changed_pretrain_setting_never_reuses_a_stale_autoencoder(tmp_path, digits, monkeypatch):
    from src import pretrain

    calls = []
    real_run = pretrain.run
    monkeypatch.setattr(pretrain, "run", lambda *a: calls.append(1) or real_run(*a))

    def point(*overrides):
        cfg = make_cfg("mlflow.enabled=false", f"paths.cache={tmp_path / 'cache'}", *overrides)
        out = tmp_path / f"job{len(list(tmp_path.glob('job*')))}"
        train.pretrain_cached(cfg, digits, out, "data")
        return out

    point("pretrain.epochs=1", "dropout=0.0")
    out = point("pretrain.epochs=1", "dropout=0.5")
    assert len(calls) == 1 and (out / "models/encoder.keras").is_file()
    point("pretrain.epochs=2")
    assert len(calls) == 2
    point("pretrain.epochs=2", "sweep.reuse_autoencoder=false")
    assert len(calls) == 3


def test_retry_locked_retries_only_lock_errors(monkeypatch):
    from src import tracking

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking.retry_locked(flaky) == "ok" and len(attempts) == 3

    def broken():
        attempts.append(1)
        raise RuntimeError("no such table: runs")

    attempts.clear()
    with pytest.raises(RuntimeError, match="no such table"):
        tracking.retry_locked(broken)
    assert len(attempts) == 1


@pytest.mark.e2e
def test_submitit_local_launcher_runs_the_sweep(project):
    run_cli(project, "-m", "src.train", "bottleneck=4", "dropout=0.0", *TINY,
            "hydra/launcher=submitit_local", "-m")  # fmt: skip
    runs = _runs(mlflow_client(project))
    parent = next(r for r in runs if r.data.tags.get("sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 1
    assert all("test_accuracy" in c.data.metrics for c in children)


def test_slurm_preset_composes():
    from hydra import compose, initialize_config_dir

    from tests.conftest import ROOT

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert cfg.hydra.launcher.cpus_per_task == 4 and cfg.hydra.callbacks.sweep


def test_interrupted_sweep_ends_its_parent_run_killed(tmp_path):
    """Hydra calls no callback when a sweep is interrupted: the parent run ends KILLED at exit."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from src import sweep, tracking
    from tests.conftest import ROOT

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", [f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    callback = sweep.SweepCallback()
    callback.on_multirun_start(cfg)
    parent = callback.parent_run_id
    assert os.environ[tracking.PARENT_RUN_ENV] == parent
    callback.end_unfinished()  # what atexit runs after Ctrl-C
    run = MlflowClient().get_run(parent)
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith("interrupted")
    assert tracking.PARENT_RUN_ENV not in os.environ


@pytest.mark.parametrize(
    "override, swept",
    [("bottleneck=4,8", True), ("dropout=range(0,1,0.5)", True), ("model.hidden=[64,32]", False),
     ("bottleneck=4", False), ("dataset.class_names=[a,b]", False)],
)  # fmt: skip
def test_is_swept_tells_sweeps_from_lists(override, swept):
    from src import sweep

    assert sweep.is_swept(override) is swept


def _row(bottleneck, dropout, seed, val, test):
    return {"status": "FINISHED", "bottleneck": bottleneck, "dropout": dropout, "seed": seed,
            "val_accuracy": val, "test_accuracy": test}  # fmt: skip


def test_points_over_seeds_rank_on_validation_with_t_intervals():
    from scipy import stats as scipy_stats

    from src import stats, sweep

    rows = [
        _row(8, 0.0, s, v, t) for s, v, t in [(0, 0.90, 0.99), (1, 0.91, 0.98), (2, 0.92, 0.97)]
    ]
    rows += [
        _row(32, 0.5, s, v, t) for s, v, t in [(0, 0.95, 0.90), (1, 0.96, 0.91), (2, 0.94, 0.93)]
    ]
    rows.append({"status": "FAILED", "bottleneck": 32, "dropout": 0.5, "seed": 3})
    points, comparison = sweep.summarize(rows)
    best, other = points
    assert (best["bottleneck"], best["n"], best["seeds"]) == (32, 3, "0 1 2")  # not test acc
    half = scipy_stats.t.ppf(0.975, 2) * np.std([0.95, 0.96, 0.94], ddof=1) / np.sqrt(3)
    assert best["val_accuracy_ci_high"] - best["val_accuracy_mean"] == pytest.approx(half)
    assert best["val_accuracy_ci_low"] < 0.95 < best["val_accuracy_ci_high"]
    expected = scipy_stats.ttest_rel([0.90, 0.91, 0.93], [0.99, 0.98, 0.97]).pvalue
    assert comparison == pytest.approx(
        {"metric": "test_accuracy", "n": 3, "difference": -0.0667, "p_value": expected}, abs=1e-4
    )
    text = sweep.points_table(points, comparison)
    assert "on 3 paired seeds: test accuracy -0.0667, paired t-test p = " in text
    assert text.splitlines()[1].startswith("*         32")
    assert stats.interval([0.9])[0] == 0.9 and np.isnan(stats.interval([0.9])[1])
    near_one = stats.by_point([_row(8, 0.0, s, v, v) for s, v in enumerate([0.99, 1.0, 0.97])])
    assert near_one[0]["val_accuracy_ci_high"] == 1.0  # an accuracy's interval stops at 1
    assert stats.interval([0.99, 1.0, 0.97])[2] > 1.0


def test_one_seed_says_no_interval_is_possible():
    from src import sweep

    points, comparison = sweep.summarize([_row(8, 0.0, 0, 0.9, 0.9), _row(16, 0.0, 0, 0.8, 0.95)])
    assert points[0]["bottleneck"] == 8 and np.isnan(points[0]["val_accuracy_ci_low"])
    assert "one seed per point: no confidence interval" in sweep.points_table(points, comparison)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A project after a 2 x 2 x 3-seed sweep (basic launcher)."""
    project = copy_project(tmp_path_factory.mktemp("seeded"))
    proc = run_cli(project, "-m", "src.train", "bottleneck=4,8", "dropout=0.0,0.5", "seed=0,1,2",
                   *TINY, "-m")  # fmt: skip
    return project, proc


@pytest.mark.e2e
def test_seeded_sweep_summary_ci_p_value_and_a_champion_that_stays(seeded):
    project, proc = seeded
    sweep_dir = next(project.glob("multirun/*/*"))
    points = list(csv.DictReader((sweep_dir / "points.csv").open()))
    assert len(points) == 4 and all(p["n"] == "3" for p in points)
    for p in points:
        assert float(p["val_accuracy_ci_low"]) <= float(p["val_accuracy_mean"])
        assert float(p["val_accuracy_mean"]) <= float(p["val_accuracy_ci_high"])
    means = [float(p["val_accuracy_mean"]) for p in points]
    assert means == sorted(means, reverse=True)  # best mean validation accuracy first
    log = proc.stdout + proc.stderr
    assert "paired seeds: test accuracy" in log and "paired t-test p" in log

    client = mlflow_client(project)
    runs = _runs(client)
    parent = next(r for r in runs if r.data.tags.get("sweep") == "parent")
    assert parent.data.metrics["best_n_seeds"] == 3
    assert parent.data.metrics["best_val_accuracy_mean"] == pytest.approx(means[0])
    assert "paired seeds" in parent.data.tags["best_vs_runner_up"]
    top = points[0]
    best_runs = [r for r in runs if r.data.params.get("bottleneck") == top["bottleneck"]
                 and r.data.params.get("dropout") == top["dropout"]]  # fmt: skip
    best = max(best_runs, key=lambda r: r.data.metrics["val_accuracy"])
    champion = client.get_model_version_by_alias("ae-classify-digits", "champion")
    assert champion.run_id == best.info.run_id
    assert f"validation accuracy {best.data.metrics['val_accuracy']:.4f}" in champion.description

    # a worse sweep on the same prepared data (the champion's seed) leaves the alias in place
    seed = best.data.params["seed"]
    again = run_cli(project, "-m", "src.train", "bottleneck=4", "dropout=0.0", f"seed={seed}",
                    "pretrain.epochs=1", "classify.epochs=1", "classify.learning_rate=1e-6",
                    "-m")  # fmt: skip
    assert "champion of ae-classify-digits stays" in again.stdout + again.stderr
    assert client.get_model_version_by_alias("ae-classify-digits", "champion").version == (
        champion.version
    )
    tagged = [r for r in _runs(client) if r.data.tags.get("champion") == "true"]
    assert [r.info.run_id for r in tagged] == [best.info.run_id]


@pytest.mark.e2e
def test_sweep_killed_with_sigkill_resumes_under_its_parent(project):
    """kill -9 during the third point; the same command again trains only what is missing."""
    args = ["-m", "src.train", "bottleneck=4,8", "dropout=0.0,0.5", *TINY, "-m"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    proc = subprocess.Popen([sys.executable, *args], cwd=project, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(1200):  # Hydra makes the third job's folder as the point starts
            if list(project.glob("multirun/*/*/2/.hydra")) or proc.poll() is not None:
                break
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    client = mlflow_client(project)
    parent = next(r for r in _runs(client) if r.data.tags.get("sweep") == "parent")
    before = {r.info.run_id for r in _runs(client) if r.info.status == "FINISHED"} - {
        parent.info.run_id
    }
    assert len(before) >= 2  # the first two points finished before the kill

    again = run_cli(project, *args)
    assert (again.stdout + again.stderr).count("FINISHED before in run") == len(before)
    runs = _runs(client)
    parents = [r.info.run_id for r in runs if r.data.tags.get("sweep") == "parent"]
    assert parents == [parent.info.run_id]  # the same parent run, not a second one
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = [c for c in children if c.info.status == "FINISHED"]
    points = [(c.data.params["bottleneck"], c.data.params["dropout"]) for c in finished]
    assert sorted(points) == [("4", "0.0"), ("4", "0.5"), ("8", "0.0"), ("8", "0.5")]
    assert before <= {c.info.run_id for c in finished}  # reused, not trained again
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    sweep_dir = sorted(project.glob("multirun/*/*"))[-1]  # the rerun's folder
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert len(rows) == 4 and all(r["status"] == "FINISHED" and not r["error"] for r in rows)


def test_point_names_show_every_swept_value_briefly(monkeypatch):
    from src import tracking

    monkeypatch.setenv(
        tracking.SWEPT_KEYS_ENV, "bottleneck,dropout,seed,classify.labels_per_class"
    )
    overrides = ["bottleneck=16", "dropout=0.5", "seed=1", "classify.labels_per_class=10",
                 "pretrain.epochs=2"]  # fmt: skip
    assert train.point_name(overrides) == "b16-d0.5-s1-labels_per_class=10"
    monkeypatch.setenv(tracking.SWEPT_KEYS_ENV, "")
    assert train.point_name(["bottleneck=4", "seed=0"]) == "bottleneck=4,seed=0"


def _budget_row(labels, finetune, seed, ae, scratch, pca, raw):
    return {"status": "FINISHED", "bottleneck": 32, "dropout": 0.2, "seed": seed,
            "classify.labels_per_class": labels, "classify.finetune": finetune,
            "val_accuracy": ae, "test_accuracy": ae, "scratch_test_accuracy": scratch,
            "pca_test_accuracy": pca, "raw_test_accuracy": raw,
            "train_images_per_class": 5400.0}  # fmt: skip


def test_label_budget_csv_and_figure_take_each_method_from_its_points(tmp_path):
    from matplotlib.image import imread
    from scipy import stats as scipy_stats

    from src import stats, sweep

    rows = []
    for labels, base in [(1, 0.3), (10, 0.6), (None, 0.9)]:
        for seed in (0, 1, 2):
            d = 0.01 * seed
            # frozen points: their scratch (trained for the head's epochs only) is not used
            rows.append(_budget_row(labels, False, seed, base + d, 0.0, base - 0.1 + d, 0.5 + d))
            rows.append(_budget_row(labels, True, seed, base + 0.05 + d, base + 0.02 + 2 * d,
                                    0.0, 0.5 + d))  # fmt: skip
    rows.append({"status": "FAILED", "seed": 3, "classify.labels_per_class": 1})
    swept = ["classify.labels_per_class", "classify.finetune", "seed"]
    budget = sweep.write_label_budget(rows, swept, False, tmp_path)

    table = list(csv.DictReader((tmp_path / "label_budget.csv").open()))
    assert len(table) == len(budget) == 3 * 5  # 3 budgets x 5 methods
    cell = {(r["labels_per_class"], r["method"]): r for r in table}
    assert {r["x"] for r in table} == {"1.0", "10.0", "5400.0"}  # "all" at the images per class
    scratch = cell[("10", "from scratch")]  # from the fine-tuned points only, 3 seeds
    values = [0.62, 0.64, 0.66]
    low, high = scipy_stats.t.interval(0.95, 2, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert (scratch["n"], scratch["seeds"]) == ("3", "0 1 2")
    assert float(scratch["test_accuracy_mean"]) == pytest.approx(0.64)
    assert float(scratch["test_accuracy_ci_low"]) == pytest.approx(low)
    assert float(scratch["test_accuracy_ci_high"]) == pytest.approx(high)
    assert float(cell[("all", "autoencoder, frozen")]["test_accuracy_mean"]) == pytest.approx(0.91)
    assert float(cell[("all", "autoencoder, fine-tuned")]["test_accuracy_mean"]) == (
        pytest.approx(0.96)
    )
    assert float(cell[("1", "PCA + same head")]["test_accuracy_mean"]) == pytest.approx(0.21)
    raw = cell[("1", "raw pixels, logistic regression")]  # each seed once, not twice
    assert raw["n"] == "3" and float(raw["test_accuracy_mean"]) == pytest.approx(0.51)
    assert imread(tmp_path / "label_budget.png").shape[2] in (3, 4)

    # a sweep of the frozen encoder only: every baseline from its points
    frozen = [{k: v for k, v in r.items() if k != "classify.finetune"} for r in rows
              if r.get("classify.finetune") is False]  # fmt: skip
    only = stats.label_budget(frozen, False)
    assert {b["method"] for b in only} >= {"from scratch", "autoencoder, frozen"}
    assert "autoencoder, fine-tuned" not in {b["method"] for b in only}
    scratch = [b["test_accuracy_mean"] for b in only if b["method"] == "from scratch"]
    assert scratch == [0.0, 0.0, 0.0]  # the frozen points' own from-scratch runs


def test_points_keep_label_budgets_and_finetune_apart():
    from src import sweep

    rows = [_budget_row(labels, ft, s, v + 0.01 * s, 0, 0, 0)
            for labels, ft, v in [(1, False, 0.3), (1, True, 0.4), (None, False, 0.9),
                                  (None, True, 0.95)] for s in (0, 1)]  # fmt: skip
    keys = sweep.point_keys(["classify.labels_per_class", "classify.finetune", "seed"])
    assert keys == ["bottleneck", "dropout", "classify.labels_per_class", "classify.finetune"]
    points, comparison = sweep.summarize(rows, keys)
    assert len(points) == 4 and all(p["n"] == 2 for p in points)
    best = points[0]
    assert (best["classify.labels_per_class"], best["classify.finetune"]) == (None, True)
    assert comparison["n"] == 2 and comparison["difference"] == pytest.approx(0.05)
    text = sweep.points_table(points, comparison, keys)
    assert "classify.labels_per_class=null, classify.finetune=true) vs runner-up" in text
    assert len(sweep.summarize(rows)[0]) == 1  # bottleneck x dropout alone merges them


def test_label_budget_preset_sweeps_24_points_on_3_autoencoders():
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src import sweep
    from tests.conftest import ROOT

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", ["experiment=mnist_label_budget"], return_hydra_config=True)
        fixed = compose("train", ["experiment=mnist_label_budget", "seed=0"],
                        return_hydra_config=True)  # fmt: skip
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    assert len(jobs[0]) == 24
    assert sweep.swept_keys(cfg) == ["classify.labels_per_class", "classify.finetune", "seed"]
    assert "seed" not in sweep.swept_keys(fixed)  # the command line's value wins
    key = train.autoencoder_key(make_cfg("experiment=mnist_label_budget"), "d")
    for overrides in (["classify.labels_per_class=1"], ["classify.finetune=true"]):
        assert train.autoencoder_key(make_cfg("experiment=mnist_label_budget", *overrides),
                                     "d") == key  # fmt: skip


@pytest.mark.e2e
def test_label_budget_sweep_from_a_preset_grid(project):
    """A grid in a preset's hydra.sweeper.params: the label budget in the sweep folder and on
    the parent run, one point per budget."""
    (project / "conf/experiment/tiny_budget.yaml").write_text(
        "# @package _global_\n"
        "hydra:\n  sweeper:\n    params:\n      classify.labels_per_class: 2,null\n"
        "      seed: 0,1\n"
    )
    run_cli(project, "-m", "src.train", "experiment=tiny_budget", "pretrain.epochs=1",
            "classify.epochs=1", "evaluate.tsne_max_samples=100", "-m")  # fmt: skip
    sweep_dir = next(project.glob("multirun/*/*"))
    budget = list(csv.DictReader((sweep_dir / "label_budget.csv").open()))
    assert {(b["labels_per_class"], b["method"]) for b in budget} == {
        (labels, method) for labels in ("2", "all") for method in (
            "autoencoder, frozen", "from scratch", "PCA + same head",
            "raw pixels, logistic regression")
    }  # fmt: skip
    assert all(b["n"] == "2" for b in budget)
    points = list(csv.DictReader((sweep_dir / "points.csv").open()))
    assert sorted(p["classify.labels_per_class"] for p in points) == ["", "2"]  # null: empty
    client = mlflow_client(project)
    parent = next(r for r in _runs(client) if r.data.tags.get("sweep") == "parent")
    assert parent.data.params["classify.labels_per_class"] == "2,null"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert {"summary/label_budget.csv", "summary/label_budget.png"} <= artifacts
    children = [r for r in _runs(client)
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]  # fmt: skip
    assert len(children) == 4 and len({c.data.tags["autoencoder_run_id"] for c in children}) == 2
