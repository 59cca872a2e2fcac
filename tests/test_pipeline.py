"""End-to-end: the stages through their command lines, in a temporary copy of the project."""

import csv
import json
import shutil

import numpy as np
import pytest

from src.files import file_md5
from tests.conftest import ROOT, mlflow_client, run_cli

pytestmark = pytest.mark.e2e
TINY = ["pretrain.epochs=2", "classify.epochs=2"]


def _runs(project) -> dict:
    client = mlflow_client(project)
    exp = client.get_experiment_by_name("ae-classify")
    runs = client.search_runs([exp.experiment_id])
    return {r.info.run_name: r for r in runs}


def test_four_stages_write_models_metrics_and_mlflow_runs(project):
    for stage in ("prepare", "pretrain", "classify", "evaluate"):  # one config: one pipeline_id
        run_cli(project, "-m", f"src.{stage}", *TINY, "evaluate.tsne_max_samples=100")

    from src import models

    encoder = models.load(project / "models/encoder.keras")
    assert encoder.output_shape == (None, 32)
    classifier = models.load(project / "models/classifier.keras")
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert 0.2 < metrics["test_accuracy"] <= 1  # above chance (0.1) after 2+2 epochs
    assert metrics["bottleneck"] == 32 and np.isfinite(metrics["test_loss"])
    x = np.load(project / "data/prepared.npz")["x_test"][:3]
    assert classifier.predict(x, verbose=0).shape == (3, 10)
    for key in ("pca_test_accuracy", "raw_test_accuracy", "latent_knn_accuracy"):
        assert 0.2 < metrics[key] <= 1, key
    assert metrics["pca_latent_knn_accuracy"] > 0.5  # PCA codes of digits separate well
    assert metrics["ae_minus_pca_accuracy"] == pytest.approx(
        metrics["test_accuracy"] - metrics["pca_test_accuracy"], abs=1e-6
    )
    assert 0 < metrics["pca_reconstruction_mse"] < metrics["test_reconstruction_mse"]
    for png in ("history", "confusion_matrix", "per_class_accuracy", "tsne", "reconstructions"):
        data = (project / "reports/figures" / f"{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    assert (project / "reports/predictions.csv").read_text().startswith("actual,predicted\n")
    per_class = np.genfromtxt(
        project / "reports/per_class_accuracy.csv", delimiter=",", names=True
    )
    assert per_class.dtype.names == ("class", "autoencoder", "pca", "raw")
    assert per_class["pca"].mean() == pytest.approx(metrics["pca_test_accuracy"], abs=0.05)
    report = (project / "reports/report.html").read_text()
    assert report.count("data:image/png;base64,") == 5
    assert f"{metrics['pca_test_accuracy']:.4f}" in report
    assert "t-SNE map (100 test images)" in report  # subsampled to evaluate.tsne_max_samples
    pca_classifier = models.load(project / "models/pca_classifier.keras")
    assert pca_classifier.get_layer("pca_encoder").output_shape == (None, 32)

    runs = _runs(project)
    assert set(runs) == {"prepare", "pretrain", "classify", "evaluate"}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert len({r.data.tags["pipeline_id"] for r in runs.values()}) == 1  # findable together
    assert len({r.data.tags["data_hash"] for r in runs.values()}) == 1
    assert runs["pretrain"].data.params["bottleneck"] == "32"
    assert "dropout" not in runs["pretrain"].data.params  # only the keys the stage reads
    assert runs["classify"].data.params["classify.freeze_encoder"] == "True"
    client = mlflow_client(project)
    for run, key in [("pretrain", "pretrain/val_loss"), ("classify", "classify/val_accuracy")]:
        history = client.get_metric_history(runs[run].info.run_id, key)
        assert [m.step for m in history] == [0, 1]
    assert runs["evaluate"].data.metrics["test_accuracy"] == pytest.approx(
        metrics["test_accuracy"]
    )
    artifacts = {a.path for a in client.list_artifacts(runs["evaluate"].info.run_id, "evaluation")}
    assert "evaluation/confusion_matrix.png" in artifacts
    assert {"evaluation/tsne.png", "evaluation/report.html"} <= artifacts
    assert runs["evaluate"].data.metrics["pca_test_accuracy"] == pytest.approx(
        metrics["pca_test_accuracy"]
    )
    assert runs["evaluate"].data.params["evaluate.tsne_max_samples"] == "100"
    logged = client.search_logged_models(experiment_ids=[runs["pretrain"].info.experiment_id])
    assert {m.name for m in logged} == {"encoder", "autoencoder", "classifier"}
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    uri = next(m.model_uri for m in logged if m.name == "classifier")
    served = mlflow.pyfunc.load_model(uri)  # the logged model loads and predicts as saved
    np.testing.assert_allclose(served.predict(x), classifier.predict(x, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_default_settings_on_digits_beat_0_9_for_autoencoder_and_pca(project):
    run_cli(project, "-m", "src.train", "mlflow.enabled=false", "hydra.run.dir=out")
    metrics = json.loads((project / "out/reports/metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9 and metrics["pca_test_accuracy"] > 0.9


def test_bad_bottleneck_is_one_line_naming_the_key(project):
    proc = run_cli(project, "-m", "src.pretrain", "bottleneck=0", check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: bottleneck=0") and "positive integer" in last


def test_failing_stage_ends_its_run_failed_and_keeps_outputs(project):
    run_cli(project, "-m", "src.prepare", *TINY)
    run_cli(project, "-m", "src.pretrain", *TINY)
    encoder_bytes = (project / "models/encoder.keras").read_bytes()
    proc = run_cli(project, "-m", "src.classify", "bottleneck=16", *TINY, check=False)
    assert proc.returncode != 0 and "bottleneck=16" in proc.stderr.splitlines()[-1]
    assert _runs(project)["classify"].info.status == "FAILED"
    assert (project / "models/encoder.keras").read_bytes() == encoder_bytes
    assert not (project / "models/classifier.keras").exists()


def test_dvc_repro_then_noop_then_exp_run_with_a_new_bottleneck(project):
    shutil.copytree(ROOT / ".dvc", project / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    run_cli(project, "git", "init", "-q")
    run_cli(project, "git", "config", "user.email", "test@example.com")
    run_cli(project, "git", "config", "user.name", "test")
    run_cli(project, "-m", "src.params", *TINY)
    run_cli(project, "git", "add", "-A")
    run_cli(project, "git", "commit", "-qm", "init")

    run_cli(project, "dvc", "repro")
    assert "up to date" in run_cli(project, "dvc", "repro").stdout
    shown = json.loads(run_cli(project, "dvc", "metrics", "show", "--json").stdout)
    written = json.loads((project / "reports/metrics.json").read_text())
    read = shown[""]["data"]["reports/metrics.json"]["data"]  # what dvc read from the file
    assert read["test_accuracy"] == written["test_accuracy"] and read["bottleneck"] == 32

    run_cli(project, "git", "add", "-A")
    run_cli(project, "git", "commit", "-qm", "baseline")
    run_cli(project, "dvc", "exp", "run", "-S", "bottleneck=16", *[f"-S{o}" for o in TINY])
    from src import models

    assert models.load(project / "models/encoder.keras").output_shape == (None, 16)
    assert json.loads((project / "reports/metrics.json").read_text())["bottleneck"] == 16
    shown = run_cli(project, "dvc", "exp", "show", "--csv").stdout
    assert "bottleneck" in shown and "test_accuracy" in shown

    # a DVC remote (a local folder here; S3, GCS, SSH... for users): push, lose, pull back
    run_cli(project, "dvc", "remote", "add", "-d", "storage", str(project.parent / "remote"))
    run_cli(project, "dvc", "push")
    outputs = ["data/prepared.npz", "models/encoder.keras", "models/autoencoder.keras",
               "models/classifier.keras", "reports/figures/history.png"]  # fmt: skip
    before = {o: file_md5(project / o) for o in outputs}
    shutil.rmtree(project / ".dvc/cache")
    for o in outputs:
        (project / o).unlink()
    run_cli(project, "dvc", "pull")
    assert {o: file_md5(project / o) for o in outputs} == before


def test_train_on_own_npz_with_conv_finetune_augment_and_spread_labels(project):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 12, 10, 3), dtype=np.uint8)  # any size, RGB, 0..255
    np.savez(project / "mine.npz", x=x, y=np.arange(60) % 3)
    run_cli(
        project,
        "-m",
        "src.train",
        "dataset=npz",
        "dataset.path=mine.npz",
        "dataset.class_names=[a,b,c]",
        "model=conv",
        "model.filters=[4,8]",
        "bottleneck=4",
        "classify.finetune=true",
        "classify.finetune_epochs=1",
        "classify.labels_per_class=5",
        "classify.label_spreading=true",
        "classify.augment.shift=0.1",
        "classify.augment.rotation=10",
        "pretrain.noise_factor=0.5",
        "pretrain.epochs=1",
        "classify.epochs=1",
        "hydra.run.dir=out",
    )
    metrics = json.loads((project / "out/reports/metrics.json").read_text())
    assert metrics["bottleneck"] == 4
    history = (project / "out/reports/classify_history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # header, 1 frozen epoch, 1 fine-tuning epoch
    predicted = list(csv.reader((project / "out/reports/predictions.csv").open()))[1:]
    assert len(predicted) == 12 and {actual for actual, _ in predicted} == {"a", "b", "c"}
    right = sum(actual == guess for actual, guess in predicted)  # noise images: any accuracy
    assert metrics["test_accuracy"] == pytest.approx(right / 12)


def test_missing_mnist_file_is_one_line_naming_the_key(project):
    proc = run_cli(
        project, "-m", "src.prepare", "dataset=mnist", "dataset.path=no/mnist.npz", check=False
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: dataset.path='no/mnist.npz' not found")
