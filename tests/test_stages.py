"""The four stages' run() in process on digits (no MLflow): outputs written, loadable and
replaced together."""

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from src import classify, evaluate, models, prepare, pretrain
from src.config import validate
from tests.conftest import TINY, make_cfg


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("stages")
    cfg = validate(make_cfg("mlflow.enabled=false", *TINY))
    arrays = prepare.run(cfg, out)
    pretrain.run(cfg, arrays, out)
    classify.run(cfg, arrays, out)
    return cfg, arrays, out, evaluate.run(cfg, arrays, out)


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_stages_write_every_output_and_evaluate_scores_above_chance(ran):
    cfg, arrays, out, metrics = ran
    p = cfg.paths
    assert models.load(out / p.encoder).output_shape == (None, 32)
    assert models.load(out / p.pca_classifier).get_layer("pca_encoder").output_shape == (None, 32)
    assert np.load(out / p.pca)["components"].shape == (32, 64)
    assert json.loads((out / p.preprocessing).read_text())["image_shape"] == [8, 8, 1]
    assert json.loads((out / p.metrics).read_text())["test_accuracy"] == metrics["test_accuracy"]
    assert metrics["test_accuracy"] > 0.2 and metrics["raw_test_accuracy"] > 0.9  # chance 0.1
    rows = list(csv.DictReader((out / p.predictions).open()))
    right = np.mean([r["actual"] == r["predicted"] for r in rows])
    assert len(rows) == len(arrays["y_test"]) and right == pytest.approx(metrics["test_accuracy"])
    pngs = {f.name for f in (out / p.figures).glob("*.png")}
    assert pngs == {"history.png", "confusion_matrix.png", "per_class_accuracy.png", "tsne.png",
                    "reconstructions.png"}  # fmt: skip
    assert not list(out.glob(".outputs-*"))  # staging folders are gone


def test_classify_logs_the_val_accuracy_of_the_classifier_it_keeps(ran, tmp_path, caplog):
    """Early stopping keeps the best epoch's weights: the line gives their val accuracy (as
    evaluate and a sweep's progress line do), not the last epoch's."""
    _, arrays, out, _ = ran
    # a noisy head: its best epoch (the weights kept) comes before the last
    noisy = ["classify.epochs=12", "classify.patience=2", "classify.learning_rate=0.05",
             "classify.head_units=8", "classify.batch_size=16"]  # fmt: skip
    cfg = validate(make_cfg("mlflow.enabled=false", *TINY, *noisy))
    project = shutil.copytree(out, tmp_path / "project")  # the module's outputs left as they are
    with caplog.at_level(logging.INFO, logger="src.classify"):
        classify.run(cfg, arrays, project)
    (said,) = [r.getMessage() for r in caplog.records
               if r.getMessage().startswith("classifier val accuracy")]  # fmt: skip
    kept = models.load(project / cfg.paths.classifier)
    predicted = kept.predict(arrays["x_val"], verbose=0).argmax(axis=1)
    assert said == f"classifier val accuracy {np.mean(predicted == arrays['y_val']):.4f}"


def test_interrupt_between_two_writes_leaves_every_old_output(ran, monkeypatch):
    cfg, arrays, out, _ = ran
    before = _snapshot(out)
    saved = []

    def save_then_interrupt(model, path):
        saved.append(path)
        if len(saved) == 2:  # the classifier is written, the PCA classifier is next
            raise KeyboardInterrupt
        models_save(model, path)

    models_save = models.save
    monkeypatch.setattr(models, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        classify.run(validate(make_cfg("mlflow.enabled=false", *TINY, "dropout=0.5")), arrays, out)
    assert len(saved) == 2
    assert _snapshot(out) == before  # all old outputs, none of the new
    assert not list(out.glob(".outputs-*"))


def test_unwritable_output_folder_fails_before_training(ran, tmp_path):
    from src.runtime import UserError

    cfg, arrays, _, _ = ran
    (tmp_path / "models").write_text("a file where a folder should be")
    with pytest.raises(UserError, match="cannot create output folder"):
        pretrain.run(cfg, arrays, tmp_path)


def test_same_config_and_seed_give_identical_metrics(ran, tmp_path):
    """Seeded Python, NumPy and TensorFlow: a second run of one config agrees to the last digit."""
    cfg, arrays, out, metrics = ran
    pretrain.run(cfg, arrays, tmp_path)
    classify.run(cfg, arrays, tmp_path)
    assert evaluate.run(cfg, arrays, tmp_path) == metrics
