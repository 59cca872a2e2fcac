"""The Ladder network (src/ladder.py, docs/ladder.md): the model, its costs, its exported
encoder, and model=ladder through the four stages in process on digits."""

import json

import keras
import numpy as np
import pytest

from src import data, ladder, models
from src.runtime import UserError
from tests.conftest import TINY, make_cfg, mlflow_client, run_stages

# A small Ladder for tests: 64-32-16-10, every layer denoised, a few steps an epoch
SMALL = ["model=ladder", "bottleneck=10", "model.hidden=[32,16]",
         "model.denoising_weights=[1000,10,0.1,0.1]", "model.epochs=2", "model.batch_size=32",
         "classify.labels_per_class=10"]  # fmt: skip


def _ladder(digits, *overrides: str) -> tuple:
    from src.config import validate

    cfg = validate(make_cfg(*SMALL, *overrides))
    keras.utils.set_random_seed(0)
    return models.build(cfg.model, digits["x_train"].shape[1:], cfg.bottleneck)


def _labelled(digits) -> tuple[np.ndarray, np.ndarray]:
    return data.labelled(digits["x_train"], digits["y_train"], 10, 0)


def test_one_epoch_lowers_the_cost_and_reports_each_layers_denoising_cost(digits):
    net, _ = _ladder(digits, "model.epochs=1")
    val = digits["x_val"], digits["y_val"]
    net.compile()
    before = net.evaluate(*val, verbose=0, return_dict=True)["loss"]
    history = ladder.fit(net, _labelled(digits), digits["x_train"], val)
    assert history["val_loss"][0] < before  # the clean pass's cross-entropy on x_val
    names = ["supervised", "denoising_3", "denoising_2", "denoising_1", "denoising_0"]
    assert all(np.isfinite(history[n][0]) and history[n][0] > 0 for n in names)
    weighted = 1000 * history["denoising_0"][0] + 10 * history["denoising_1"][0]
    assert history["loss"][0] > history["supervised"][0] + weighted  # one cost: all of them


def test_gamma_model_denoises_the_top_layer_only(digits):
    net, _ = _ladder(digits, "model.variant=gamma")
    assert net.denoised == [3] and not net.v and len(net.g) == 1
    assert net.g[0].a.shape == (10, 10)  # the combinator: 10 weights per unit
    val = digits["x_val"], digits["y_val"]
    history = ladder.fit(net, _labelled(digits), digits["x_train"], val)
    assert [k for k in history if k.startswith("denoising")] == ["denoising_3"]
    assert history["loss"][1] < history["loss"][0]


def test_exported_encoder_is_the_clean_pass_and_loads_in_safe_mode(digits, tmp_path):
    net, _ = _ladder(digits)
    ladder.fit(net, _labelled(digits), digits["x_train"], (digits["x_val"], digits["y_val"]))
    encoder = ladder.export_encoder(net, (8, 8, 1))
    models.save(encoder, tmp_path / "encoder.keras")
    loaded = models.load(tmp_path / "encoder.keras")  # safe mode, no custom objects
    x = digits["x_test"][:64]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), net(x), rtol=1e-4, atol=1e-4)
    assert {type(layer).__name__ for layer in loaded.layers} == {
        "InputLayer", "Flatten", "Dense", "BatchNormalization", "ReLU"
    }  # fmt: skip


def test_bad_ladder_settings_name_the_key(digits):
    with pytest.raises(UserError, match="^model.denoising_weights="):
        _ladder(digits, "model.denoising_weights=[1,1]")
    with pytest.raises(UserError, match="^bottleneck=8 .* number of classes, 10"):
        ladder.check_classes(8, 10)
    from src.config import validate

    with pytest.raises(UserError, match="^model.variant="):
        validate(make_cfg(*SMALL, "model.variant=delta"))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    project = tmp_path_factory.mktemp("ladder")
    run_stages(project, *TINY, *SMALL, tracked=True)
    return project, make_cfg(*TINY, *SMALL)


def test_stages_with_the_ladder_write_every_output(pipeline, digits):
    project, cfg = pipeline
    p = cfg.paths
    files = [p.prepared, p.encoder, p.autoencoder, p.classifier, p.preprocessing, p.pca,
             p.pca_classifier, p.scratch_classifier, p.pretrain_history, p.classify_history,
             p.metrics, p.predictions, p.per_class, p.report]  # fmt: skip
    missing = [f for f in files if not (project / f).is_file()]
    assert not missing, missing
    pngs = {f.name for f in (project / p.figures).glob("*.png")}
    assert pngs == {"history.png", "confusion_matrix.png", "per_class_accuracy.png", "tsne.png",
                    "reconstructions.png"}  # fmt: skip
    metrics = json.loads((project / p.metrics).read_text())
    assert metrics["test_accuracy"] > 0.3 and metrics["bottleneck"] == 10  # chance is 0.1
    encoder = models.load(project / p.encoder)
    classifier = models.load(project / p.classifier)
    x = data.load(project / p.prepared)["x_test"][:20]
    probabilities = keras.ops.softmax(encoder.predict(x, verbose=0))
    np.testing.assert_allclose(classifier.predict(x, verbose=0), probabilities, atol=1e-5)
    history = data.load_history(project / p.pretrain_history)
    assert len(history["loss"]) == 2 and "denoising_0" in history and "val_loss" in history
    assert models.load(project / p.autoencoder).output_shape == (None, 8, 8, 1)


def test_mlflow_gets_the_supervised_and_each_layers_denoising_cost_per_epoch(pipeline):
    project, _ = pipeline
    client = mlflow_client(project)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.stage = 'pretrain'"
    )
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    for name in ["supervised", "denoising_0", "denoising_1", "denoising_2", "denoising_3"]:
        steps = client.get_metric_history(run_id, f"pretrain/{name}")
        assert [m.step for m in steps] == [0, 1] and all(m.value > 0 for m in steps), name
    assert runs[0].data.params["classify.labels_per_class"] == "10"


def test_classifier_is_the_encoder_with_a_softmax_and_fine_tunes_when_asked(digits):
    _, encoder = _ladder(digits)
    before = [w.copy() for w in encoder.get_weights()]
    labels = {"labels_per_class": 10, "seed": 0}
    settings = {"learning_rate": 1e-3, "finetune_epochs": 0, "finetune_learning_rate": 1e-3,
                "batch_size": 32, "patience": None}  # fmt: skip
    classifier, history = ladder.classify(encoder, digits, labels, settings)
    assert [len(v) for v in history.values()] == [1, 1, 1, 1] and "val_accuracy" in history
    x = digits["x_test"][:10]
    expected = keras.ops.softmax(encoder.predict(x, verbose=0))
    np.testing.assert_allclose(classifier.predict(x, verbose=0), expected, atol=1e-5)
    _, history = ladder.classify(encoder, digits, labels, {**settings, "finetune_epochs": 2})
    assert len(history["val_accuracy"]) == 2
    after = encoder.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
