"""End-to-end: the stages through their command lines, in a temporary copy of the project."""

import csv
import json

import numpy as np
import pytest

from tests.conftest import TINY, mlflow_client, run_cli, run_stages

pytestmark = pytest.mark.e2e


def _runs(project) -> dict:
    client = mlflow_client(project)
    exp = client.get_experiment_by_name("ae-classify")
    runs = client.search_runs([exp.experiment_id])
    return {r.info.run_name: r for r in runs}


def test_four_stages_write_models_metrics_and_mlflow_runs(project):
    for stage in ("prepare", "pretrain", "classify", "evaluate"):  # one config: one pipeline_id
        run_cli(project, "-m", f"src.{stage}", *TINY)

    from src import models

    encoder = models.load(project / "models/encoder.keras")
    assert encoder.output_shape == (None, 32)
    classifier = models.load(project / "models/classifier.keras")
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert 0.2 < metrics["test_accuracy"] <= 1  # above chance (0.1) after 2+2 epochs
    assert metrics["bottleneck"] == 32 and np.isfinite(metrics["test_loss"])
    x = np.load(project / "data/prepared.npz")["x_test"][:3]
    assert classifier.predict(x, verbose=0).shape == (3, 10)
    for key in ("pca_test_accuracy", "raw_test_accuracy", "scratch_test_accuracy",
                "latent_knn_accuracy"):  # fmt: skip
        assert 0.2 < metrics[key] <= 1, key
    assert metrics["ae_minus_scratch_accuracy"] == pytest.approx(
        metrics["test_accuracy"] - metrics["scratch_test_accuracy"], abs=1e-6
    )
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
    assert per_class.dtype.names == ("class", "autoencoder", "pca", "raw", "scratch")
    assert per_class["pca"].mean() == pytest.approx(metrics["pca_test_accuracy"], abs=0.05)
    report = (project / "reports/report.html").read_text()
    assert report.count("data:image/png;base64,") == 5
    assert f"{metrics['pca_test_accuracy']:.4f}" in report
    assert "t-SNE map (100 test images)" in report  # subsampled to TINY's tsne_max_samples
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
    lo, hi = np.load(project / "data/prepared.npz")["pixel_range"]
    raw = (x[..., 0] * (hi - lo) + lo).astype(np.float64)  # (3, 8, 8), 0..16 as load_digits'
    served = mlflow.pyfunc.load_model(uri).predict(raw)  # takes raw pixels, scales them itself
    expected = classifier.predict(x, verbose=0)
    assert served["class"].tolist() == expected.argmax(1).tolist()
    assert served["class_name"].tolist() == [str(k) for k in expected.argmax(1)]
    np.testing.assert_allclose(np.stack(served["probabilities"]), expected, atol=1e-5)


def test_default_settings_on_digits_beat_0_9_for_autoencoder_and_pca(tmp_path):
    """README's claim, with every default (the DVC pipeline's 32 row): the four stages in this
    process, as `dvc repro` runs them, without MLflow."""
    run_stages(tmp_path)
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9 and metrics["pca_test_accuracy"] > 0.9


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
        "classify.augment.zoom=0.1",
        "pretrain.noise_factor=0.5",
        "pretrain.epochs=1",
        "classify.epochs=1",
        "hydra.run.dir=out",
        "mlflow.enabled=false",
    )
    assert not (project / "mlflow.db").exists()
    result = json.loads((project / "out/result.json").read_text())  # what a sweep summarises
    assert result["status"] == "FINISHED" and result["run_id"] is None
    metrics = json.loads((project / "out/reports/metrics.json").read_text())
    assert metrics["bottleneck"] == 4 and result["test_accuracy"] == metrics["test_accuracy"]
    history = (project / "out/reports/classify_history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # header, 1 frozen epoch, 1 fine-tuning epoch
    predicted = list(csv.reader((project / "out/reports/predictions.csv").open()))[1:]
    assert len(predicted) == 12 and {actual for actual, _ in predicted} == {"a", "b", "c"}
    right = sum(actual == guess for actual, guess in predicted)  # noise images: any accuracy
    assert metrics["test_accuracy"] == pytest.approx(right / 12)
