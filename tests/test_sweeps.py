"""Grid sweeps of src.train, in this process: the parent run and its children, shared work,
failures, the summary over seeds, the champion rules, resume, and the context jobs read."""

import csv
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from src.sweeps import champion, context, job, study
from tests.conftest import ROOT, TINY, copy_project, mlflow_client, run_cli
from tests.sweeping import client_of, family, sweep_dir, train_multirun


def _compose(*overrides: str):
    """src.train's config with Hydra's part, as a multirun composes it."""
    with initialize_config_dir(str(ROOT / "conf"), job_name="train", version_base="1.3"):
        return compose("train", list(overrides), return_hydra_config=True)


class Lines(logging.Handler):
    """The messages of one logger, kept in a list."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A folder after a 2x2 sweep in this process, and its progress lines (`.progress`)."""
    workdir = tmp_path_factory.mktemp("swept")
    lines, logger = Lines(), logging.getLogger("src.sweeps.progress")
    logger.addHandler(lines)
    try:
        train_multirun(workdir, "bottleneck=4,8", "dropout=0.0,0.5", *TINY)
    finally:
        logger.removeHandler(lines)
    (workdir / "progress.txt").write_text("\n".join(lines.lines))
    return workdir


def test_a_progress_line_per_point_and_the_count_on_the_parent(swept):
    lines = (swept / "progress.txt").read_text().splitlines()
    assert [line.split("]")[0] for line in lines] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert lines[0].startswith("[1/4] bottleneck=4 dropout=0.0  val 0.")
    assert all(re.search(r"best 0\.\d{4} \(b\d-d0\.\d\)", line) for line in lines)
    assert "left" in lines[0] and lines[-1].endswith("last point")
    client = client_of(swept)
    parent, _ = family(client)
    history = client.get_metric_history(parent.info.run_id, "points_done")
    assert sorted((m.step, m.value) for m in history) == [(n, n) for n in (1, 2, 3, 4)]


def test_progress_line_of_a_failed_point_and_durations():
    from src.sweeps import progress

    done = [{"status": "FINISHED", "val_accuracy": 0.9, "seed": 0, "run_name": "b8-d0.0"},
            {"status": "FAILED", "seed": 0}]  # fmt: skip
    text = progress.line(done, 5, "bottleneck=8 dropout=0.5", done[1], 3 * 3600.0)
    assert text == "[2/5] bottleneck=8 dropout=0.5  FAILED  best 0.9000 (b8-d0.0)  ~3.0 h left"
    assert [progress.duration(s) for s in (41, 360, 9000)] == ["41 s", "6 min", "2.5 h"]


def test_sweep_parent_children_reuse_summary_and_champion(swept):
    client = client_of(swept)
    parent, children = family(client)
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "bottleneck=4,8 dropout=0.0,0.5 " + " ".join(TINY)
    assert parent.data.params["bottleneck"] == "4,8" and parent.data.params["dropout"] == "0.0,0.5"
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert {c.info.run_name for c in children} == {"b4-d0.0", "b4-d0.5", "b8-d0.0", "b8-d0.5"}
    experiment = client.get_experiment_by_name("ae-classify")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not GenAI
    inputs = client.get_run(children[0].info.run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["digits-train"]
    assert inputs[0].dataset.digest == children[0].data.tags["data_hash"][:12]
    # each autoencoder trained once (by one child), reused by the other child with its bottleneck
    trained_by = {c.data.tags["autoencoder_run_id"] for c in children}
    assert len(trained_by) == 2 and trained_by <= {c.info.run_id for c in children}
    # shared work: the raw baseline once for the data, PCA and its t-SNE map once per bottleneck
    reused = [{k for k in c.data.tags if k.startswith("reused.")} for c in children]
    assert sum("reused.raw-baseline" in r for r in reused) == 3
    assert sum("reused.tsne-pca" in r for r in reused) == 2

    folder = sweep_dir(swept)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert {"summary/summary.csv", "summary/accuracy_heatmap.png"} <= artifacts
    rows = list(csv.DictReader((folder / "summary.csv").open()))
    logged = {c.info.run_id: c.data.metrics["test_accuracy"] for c in children}
    assert {r["run_id"]: float(r["test_accuracy"]) for r in rows} == pytest.approx(logged)
    assert all(r["status"] == "FINISHED" and not r["error"] for r in rows)
    assert (folder / "accuracy_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    saved = context.SweepContext.load(folder)  # what every job read
    assert saved.parent_run_id == parent.info.run_id and saved.swept == ["bottleneck", "dropout"]

    best = max(children, key=lambda c: c.data.metrics["val_accuracy"])  # chosen on validation
    version = client.get_model_version_by_alias("ae-classify-digits", "champion")
    assert version.run_id == best.info.run_id
    assert client.get_run(best.info.run_id).data.tags["champion"] == "true"


def test_champion_loads_by_alias_and_predicts_like_its_job(swept, monkeypatch):
    import mlflow

    from src import models

    client = client_of(swept)
    version = client.get_model_version_by_alias("ae-classify-digits", "champion")
    job_dir = client.get_run(version.run_id).data.tags["output_dir"]
    local = models.load(f"{job_dir}/models/classifier.keras")
    prepared = np.load(next(swept.glob(".cache/prepared/*/*.npz")))
    x = prepared["x_test"][:16]
    lo, hi = prepared["pixel_range"]
    registry = f"sqlite:///{swept / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry)  # set_registry_uri sets it: undone after
    mlflow.set_registry_uri(registry)
    try:
        served = mlflow.pyfunc.load_model("models:/ae-classify-digits@champion")
        answer = served.predict((x[..., 0] * (hi - lo) + lo).astype(np.float64))  # raw pixels
    finally:
        mlflow.set_registry_uri("")
    assert list(answer["class"]) == local.predict(x, verbose=0).argmax(1).tolist()


def test_failed_point_does_not_stop_the_sweep(tmp_path):
    # bottleneck=100 is larger than the 64 input pixels: that point fails inside its run
    with pytest.raises(SystemExit) as exit_:
        train_multirun(tmp_path, "bottleneck=4,100", *TINY)
    message = str(exit_.value)
    assert "1 of 2 sweep points failed" in message and "bottleneck=100" in message
    parent, children = family(client_of(tmp_path))
    runs = {r.data.params["bottleneck"]: r for r in children}
    assert runs["4"].info.status == "FINISHED" and "test_accuracy" in runs["4"].data.metrics
    assert runs["100"].info.status == "FAILED"
    assert "larger than the 64 input pixels" in runs["100"].data.tags["error"]
    assert parent.info.status == "FAILED" and parent.data.params["bottleneck"] == "4,100"
    jobs = sorted(sweep_dir(tmp_path).glob("[0-9]"))
    results = [json.loads((j / "result.json").read_text()) for j in jobs]
    assert [r["status"] for r in results] == ["FINISHED", "FAILED"]
    assert (jobs[0] / "models/classifier.keras").is_file()


def test_interrupted_sweep_ends_its_parent_run_killed(tmp_path, monkeypatch):
    """Hydra calls no callback when a sweep is interrupted: the parent run ends KILLED at exit."""
    from hydra.core.hydra_config import HydraConfig
    from mlflow import MlflowClient

    from src.sweeps.callback import SweepCallback

    monkeypatch.chdir(tmp_path)
    cfg = _compose(f"hydra.sweep.dir={tmp_path}")
    HydraConfig.instance().set_config(cfg)
    callback = SweepCallback()
    callback.on_multirun_start(cfg)
    parent = context.SweepContext.load(tmp_path).parent_run_id
    assert parent == callback.parent_run_id
    callback.interrupted()  # what atexit runs after Ctrl-C
    run = MlflowClient().get_run(parent)
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith("interrupted")


def test_a_sweep_whose_tracking_store_fails_at_start_stops_with_one_line(tmp_path, monkeypatch):
    """Hydra only warns when a callback raises: a sweep that cannot open its parent run would
    run every point to fail. It stops at once with the project's one line, and no context."""
    from hydra.core.hydra_config import HydraConfig

    from src.sweeps.callback import SweepCallback

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://x")  # it wins over the config
    cfg = _compose(f"hydra.sweep.dir={tmp_path}")
    HydraConfig.instance().set_config(cfg)
    store = mlflow.get_tracking_uri()
    try:
        with pytest.raises(SystemExit, match=r"^error: mlflow.tracking_uri='nosuchscheme://x' "
                                             r"cannot be used \("):  # fmt: skip
            SweepCallback().on_multirun_start(cfg)
    finally:
        mlflow.set_tracking_uri(store)  # setup set it: later tests' clients use the test store
    assert context.SweepContext.load(tmp_path) is None


@pytest.mark.parametrize(
    "overrides, swept",
    [(["bottleneck=4,8"], ["bottleneck"]), (["dropout=range(0,1,0.5)"], ["dropout"]),
     (["model.hidden=[64,32]"], []), (["bottleneck=4"], []), (["+a=[1,2],[3,4]"], ["a"]),
     (["dataset.class_names=[a,b]"], []), (["name='a,b'"], []), (["x=choice(1,2)"], ["x"])],
)  # fmt: skip
def test_hydras_parser_tells_what_is_swept(overrides, swept):
    from omegaconf import OmegaConf

    config = OmegaConf.create({"hydra": {"overrides": {"task": overrides}, "sweeper": {}}})
    assert study.swept_keys(config) == swept


def test_a_presets_grid_is_swept_unless_the_command_line_fixes_a_key():
    from omegaconf import OmegaConf

    def swept(*overrides: str) -> list[str]:
        grid = {"seed": "0,1", "classify": {"labels_per_class": "1,10"}}
        hydra = {"overrides": {"task": list(overrides)}, "sweeper": {"params": grid}}
        return study.swept_keys(OmegaConf.create({"hydra": hydra}))

    assert swept() == ["seed", "classify.labels_per_class"]
    assert swept("seed=3", "bottleneck=4,8") == ["bottleneck", "classify.labels_per_class"]


def test_point_names_show_every_swept_value_briefly():
    swept = ["bottleneck", "dropout", "seed", "classify.labels_per_class"]
    overrides = ["bottleneck=16", "dropout=0.5", "seed=1", "classify.labels_per_class=10",
                 "pretrain.epochs=2"]  # fmt: skip
    assert job.point_name(overrides, swept) == "b16-d0.5-s1-labels_per_class=10"
    assert job.point_name(["bottleneck=4", "seed=0"], []) == "bottleneck=4,seed=0"
    assert job.point_name(["dropout=0.123456789"], ["dropout"]) == "d0.123"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A folder after a 2-point x 2-seed sweep in this process."""
    workdir = tmp_path_factory.mktemp("seeded")
    train_multirun(workdir, "bottleneck=4,8", "dropout=0.0", "seed=0,1", *TINY)
    return workdir


def test_seeded_sweep_summary_ci_p_value_and_a_champion_that_stays(seeded, capsys):
    folder = sweep_dir(seeded)
    points = list(csv.DictReader((folder / "points.csv").open()))
    assert len(points) == 2 and all(p["n"] == "2" for p in points)
    for p in points:
        assert float(p["val_accuracy_ci_low"]) <= float(p["val_accuracy_mean"])
        assert float(p["val_accuracy_mean"]) <= float(p["val_accuracy_ci_high"])
    means = [float(p["val_accuracy_mean"]) for p in points]
    assert means == sorted(means, reverse=True)  # best mean validation accuracy first
    client = client_of(seeded)
    parent, children = family(client)
    assert parent.data.metrics["best_n_seeds"] == 2
    assert parent.data.metrics["best_val_accuracy_mean"] == pytest.approx(means[0])
    assert "paired seeds" in parent.data.tags["best_vs_runner_up"]
    top = [c for c in children if c.data.params["bottleneck"] == points[0]["bottleneck"]]
    best = max(top, key=lambda r: r.data.metrics["val_accuracy"])
    version = client.get_model_version_by_alias("ae-classify-digits", "champion")
    assert version.run_id == best.info.run_id
    assert f"validation accuracy {best.data.metrics['val_accuracy']:.4f}" in version.description

    # a worse sweep on the same prepared data (the champion's seed) leaves the alias in place
    capsys.readouterr()
    seed = best.data.params["seed"]
    train_multirun(seeded, "bottleneck=4", "dropout=0.0", f"seed={seed}", "pretrain.epochs=1",
                   "classify.epochs=1", "classify.learning_rate=1e-6")  # fmt: skip
    assert "champion of ae-classify-digits stays" in capsys.readouterr().out
    assert client.get_model_version_by_alias("ae-classify-digits", "champion").version == (
        version.version
    )
    exp = client.get_experiment_by_name("ae-classify")
    tagged = client.search_runs([exp.experiment_id], "tags.champion = 'true'")
    assert [r.info.run_id for r in tagged] == [best.info.run_id]


def _version(run_id: str, number: str = "3") -> SimpleNamespace:
    return SimpleNamespace(run_id=run_id, version=number)


def test_champion_rules_on_validation_and_the_same_data():
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.create_experiment(f"champion-rules-{time.time_ns()}")
    old = client.create_run(experiment, tags={"data_hash": "d1"}).info.run_id
    client.log_metric(old, "val_accuracy", 0.9)
    rows = [{"status": "FINISHED", "run_id": f"r{i}", "bottleneck": 8, "dropout": 0.0, "seed": i,
             "val_accuracy": v, "test_accuracy": 1 - v, "data_hash": "d1", "point": "p"}
            for i, v in enumerate([0.91, 0.95])]  # fmt: skip
    rows.append({**rows[0], "status": "FAILED", "val_accuracy": 0.99, "run_id": "r9"})
    points = [{"bottleneck": 8, "dropout": 0.0}]
    best = champion.candidate(rows, points, ["bottleneck", "dropout"])
    assert best["run_id"] == "r1"  # the highest validation accuracy, a FINISHED run
    assert champion.candidate(rows, [{"bottleneck": 4, "dropout": 0.0}], ["bottleneck"]) is None
    assert champion.stays(client, None, best) is None  # no champion yet: it moves
    assert champion.stays(client, _version(old), best) is None  # beaten on the same data
    assert "not beaten" in champion.stays(client, _version(old), {**best, "val_accuracy": 0.9})
    other_data = {**best, "data_hash": "d2"}
    assert "other prepared data" in champion.stays(client, _version(old), other_data)
    assert "best run already" in champion.stays(client, _version(old), {**best, "run_id": old})


def test_label_budget_preset_sweeps_24_points_on_3_autoencoders():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src import train
    from tests.conftest import make_cfg

    cfg = _compose("experiment=mnist_label_budget")
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    assert len(jobs[0]) == 24
    assert study.swept_keys(cfg) == ["classify.labels_per_class", "classify.finetune", "seed"]
    fixed = _compose("experiment=mnist_label_budget", "seed=0")
    assert "seed" not in study.swept_keys(fixed)  # the command line's value wins
    key = train.autoencoder_key(make_cfg("experiment=mnist_label_budget"), "d")
    for overrides in (["classify.labels_per_class=1"], ["classify.finetune=true"]):
        assert train.autoencoder_key(make_cfg("experiment=mnist_label_budget", *overrides),
                                     "d") == key  # fmt: skip


def test_label_budget_sweep_from_a_preset_grid(tmp_path):
    """A grid in a preset's hydra.sweeper.params: the label budget in the sweep folder and on
    the parent run, one point per budget."""
    preset = ROOT / "conf/experiment/_test_tiny_budget.yaml"
    preset.write_text("# @package _global_\nhydra:\n  sweeper:\n    params:\n"
                      "      classify.labels_per_class: 2,null\n      seed: 0\n")  # fmt: skip
    try:
        train_multirun(tmp_path, "experiment=_test_tiny_budget", "pretrain.epochs=1",
                       "classify.epochs=1", "evaluate.tsne_max_samples=100")  # fmt: skip
    finally:
        preset.unlink()
    folder = sweep_dir(tmp_path)
    budget = list(csv.DictReader((folder / "label_budget.csv").open()))
    assert {(b["labels_per_class"], b["method"]) for b in budget} == {
        (labels, method) for labels in ("2", "all") for method in (
            "autoencoder, frozen", "from scratch", "PCA + same head",
            "raw pixels, logistic regression")
    }  # fmt: skip
    assert all(b["n"] == "1" for b in budget)
    points = list(csv.DictReader((folder / "points.csv").open()))
    assert sorted(p["classify.labels_per_class"] for p in points) == ["", "2"]  # null: empty
    client = client_of(tmp_path)
    parent, children = family(client)
    assert parent.data.params["classify.labels_per_class"] == "2,null"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert {"summary/label_budget.csv", "summary/label_budget.png"} <= artifacts
    assert len(children) == 2 and len({c.data.tags["autoencoder_run_id"] for c in children}) == 1


def test_slurm_preset_composes():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.ae_classify_slurm.SlurmLauncher"
    from hydra.core.plugins import Plugins

    plugin = Plugins.instance().class_name_to_class[cfg.hydra.launcher._target_]
    assert plugin.__mro__[2].__name__ == "SlurmLauncher"  # submitit's, under ours
    launcher = cfg.hydra.launcher  # what a digits or MNIST point needs (slurm.yaml)
    assert (launcher.cpus_per_task, launcher.mem_gb, launcher.timeout_min) == (2, 4, 60)
    assert cfg.hydra.callbacks.sweep


@pytest.mark.e2e
def test_sweep_killed_with_sigkill_resumes_under_its_parent(project):
    """kill -9 during the second point; the same command again trains only what is missing."""
    args = ["-m", "src.train", "bottleneck=4", "dropout=0.0,0.5", *TINY, "-m"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    proc = subprocess.Popen([sys.executable, *args], cwd=project, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(1200):  # Hydra makes the second job's folder as the point starts
            if list(project.glob("multirun/*/*/1/.hydra")) or proc.poll() is not None:
                break
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    client = mlflow_client(project)
    parent, children = family(client)
    before = {c.info.run_id for c in children if c.info.status == "FINISHED"}
    assert len(before) >= 1  # the first point finished before the kill

    again = run_cli(project, *args)
    assert (again.stdout + again.stderr).count("FINISHED before in run") == len(before)
    resumed, children = family(client)
    assert resumed.info.run_id == parent.info.run_id  # the same parent run, not a second one
    finished = [c for c in children if c.info.status == "FINISHED"]
    points = [(c.data.params["bottleneck"], c.data.params["dropout"]) for c in finished]
    assert sorted(points) == [("4", "0.0"), ("4", "0.5")]
    assert before <= {c.info.run_id for c in finished}  # reused, not trained again
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)
    assert resumed.info.status == "FINISHED"
    rows = list(csv.DictReader((sweep_dir(project) / "summary.csv").open()))
    assert len(rows) == 2 and all(r["status"] == "FINISHED" and not r["error"] for r in rows)


# What reads as an error, a warning or a progress bar on a console: TensorFlow's C++ lines
# (`E0000 ... cuInit`, `I0000 ... cudart_stub`), Python warnings, Keras' epochs and bars,
# MLflow's download bars and its registration prints (the champion line says it)
NOISE = re.compile(
    r"^[IWEF]\d{4} |absl::|cuInit|cudart_stub|warn|Epoch \d|━|\x1b\[|it/s|"
    r"Downloading|Successfully registered|Created version",
    re.IGNORECASE,
)


@pytest.mark.e2e
def test_a_sweeps_console_is_a_few_lines_per_point_without_noise(project, monkeypatch):
    """At default verbosity, as in a user's shell: a progress line per point, the summary, at
    most 60 lines for 4 points (issue 26), nothing that reads as an error or a warning."""
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # run_cli copies os.environ
    proc = run_cli(project, "-m", "src.train", "bottleneck=4,8", "dropout=0.0,0.5", *TINY, "-m")
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) <= 60, "\n".join(lines)
    assert [line for line in lines if NOISE.search(line)] == []
    progress = [line for line in lines if "src.sweeps.progress" in line]
    assert [re.search(r"\[(\d)/4\]", line).group(1) for line in progress] == ["1", "2", "3", "4"]
    assert sum("champion: bottleneck=" in line for line in lines) == 1


def test_copy_project_has_the_sweeps_package(tmp_path):
    assert (copy_project(tmp_path) / "src/sweeps/callback.py").is_file()


def test_resumed_sweep_reuses_its_finished_points_under_the_same_parent(swept):
    """Last in this file: it resumes the `swept` sweep, whose parent it marks interrupted."""
    client = client_of(swept)
    parent, children = family(client)
    client.set_terminated(parent.info.run_id, "KILLED")  # as if interrupted before its end
    train_multirun(swept, "bottleneck=4,8", "dropout=0.0,0.5", *TINY)
    again, rerun = family(client)
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert {c.info.run_id for c in rerun} == {c.info.run_id for c in children}  # not retrained
    rows = list(csv.DictReader((sweep_dir(swept) / "summary.csv").open()))
    assert {r["run_id"] for r in rows} == {c.info.run_id for c in children}
