"""The few-label recipe: self-training rounds after label spreading (training.py)."""

import numpy as np
import pytest

from src import baselines, classify, data, training
from src.config import validate
from src.runtime import UserError
from tests.conftest import make_cfg

FEW = ("classify.labels_per_class=5", "classify.label_spreading=true")
FAST = ("classify.epochs=15", "classify.self_training_epochs=5")


@pytest.mark.parametrize(
    "override, key",
    [
        ("classify.self_training_rounds=-1", "classify.self_training_rounds"),
        ("classify.self_training_rounds=1.5", "classify.self_training_rounds"),
        ("classify.self_training_source=votes", "classify.self_training_source"),
        ("classify.self_training_confidence=1.0", "classify.self_training_confidence"),
        ("classify.self_training_confidence=-0.1", "classify.self_training_confidence"),
        ("classify.self_training_epochs=0", "classify.self_training_epochs"),
    ],
)
def test_bad_self_training_values_name_the_key(override, key):
    with pytest.raises(UserError, match=rf"^{key}=.*must be"):
        validate(make_cfg(*FEW, override))


def test_self_training_needs_a_few_labels():
    with pytest.raises(UserError, match=r"^classify.self_training_rounds=2 .*labels_per_class"):
        validate(make_cfg("classify.self_training_rounds=2"))
    validate(make_cfg("classify.labels_per_class=5", "classify.self_training_rounds=2"))


def test_defaults_are_off():
    settings = classify.label_settings(validate(make_cfg()))
    assert settings["self_training_rounds"] == 0
    assert settings["labels_per_class"] is None and settings["label_spreading"] is False


def test_pseudo_labels_keep_the_known_and_the_confident_only():
    probabilities = np.array(
        [[0.95, 0.05], [0.6, 0.4], [0.1, 0.9], [0.5, 0.5], [0.2, 0.8], [0.0, 0.0]]
    )
    classes = np.array([0, 1])
    keep, known = np.array([1, 4]), np.array([1, 0])  # known labels that the model gets wrong
    index, labels = training.pseudo_labels(probabilities, classes, keep, known, 0.9)
    assert index.tolist() == [0, 1, 2, 4]  # 0 and 2 confident; 3 and 5 (unreached) not
    assert labels.tolist() == [0, 1, 1, 0]  # the known labels as they were given
    index, _ = training.pseudo_labels(probabilities, classes, keep, known, 0.0)
    assert index.tolist() == [0, 1, 2, 3, 4, 5]


def test_spread_labels_match_label_spreading(digits):
    """spread_labels, now built on spreading_distributions, labels as LabelSpreading did."""
    from sklearn.semi_supervised import LabelSpreading

    x, y = digits["x_train"].reshape(len(digits["x_train"]), -1), digits["y_train"]
    keep = data.labelled_subset(y, 3, 0)
    partial = np.full(len(y), -1)
    partial[keep] = y[keep]
    expected = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.8, max_iter=1000)
    expected = expected.fit(x, partial).transduction_
    expected[keep] = y[keep]
    index, labels = training.spread_labels(x, y, keep, 10)
    assert np.array_equal(labels, expected[index])
    classes, distributions = training.spreading_distributions(x, y, keep, 10)
    assert classes.tolist() == list(range(10)) and distributions.shape == (len(y), 10)


def fit_pca_head(digits, *overrides):
    """The PCA baseline (a linear encoder + head) on digits: fast, and fine-tunable."""
    cfg = validate(make_cfg(*FEW, *FAST, *overrides))
    pca = baselines.fit_pca(digits["x_train"], 16)
    settings = classify.head_settings(cfg, 10)
    labels = classify.label_settings(cfg)
    return baselines.fit_pca_classifier(pca, digits, labels, settings), cfg


@pytest.mark.parametrize("source", ["predictions", "spreading"])
def test_self_training_rounds_train_on_and_beat_chance(digits, source, monkeypatch):
    rounds = []
    finetune = training.finetune

    def spy(classifier, encoder, x, y, validation_data, **kwargs):
        rounds.append((kwargs["initial_epoch"], kwargs["epochs"], kwargs["trainable"]))
        return finetune(classifier, encoder, x, y, validation_data, **kwargs)

    monkeypatch.setattr(training, "finetune", spy)
    classifier, _ = fit_pca_head(
        digits,
        "classify.self_training_rounds=2",
        f"classify.self_training_source={source}",
        "classify.self_training_confidence=0.5",
        "classify.finetune=true",
        "classify.finetune_epochs=3",
        "classify.finetune_learning_rate=0.001",
    )
    # fine-tuning, then two rounds, each going on after the epochs before it
    assert rounds == [(15, 3, True), (18, 5, True), (23, 5, True)]
    _, accuracy = classifier.evaluate(digits["x_test"], digits["y_test"], verbose=0)
    assert accuracy > 0.6  # from 50 labels; chance is 0.1


@pytest.mark.parametrize("source", ["predictions", "spreading"])
def test_self_training_labels_are_the_known_and_the_confident(digits, source):
    classifier, cfg = fit_pca_head(digits)
    labels = {**classify.label_settings(cfg), "self_training_source": source,
              "self_training_confidence": 0.8}  # fmt: skip
    y, encoder = digits["y_train"], classifier.get_layer("pca_encoder")
    keep = data.labelled_subset(y, 5, cfg.seed)
    if source == "predictions":
        probabilities = classifier.predict(digits["x_train"], verbose=0)
    else:  # spread over the encoder's codes
        codes = training.encode(encoder, digits["x_train"])
        _, probabilities = training.spreading_distributions(codes, y, keep, 10)
    confident = probabilities.max(axis=1) >= 0.8
    confident[keep] = True
    expected = probabilities.argmax(axis=1)
    expected[keep] = y[keep]
    index, pseudo = training.self_training_labels(classifier, encoder, digits, labels)
    assert np.array_equal(index, np.flatnonzero(confident))
    assert len(keep) < len(index) < len(y)  # some, not all, of the others are confident
    assert np.array_equal(pseudo, expected[confident])
    assert np.mean(pseudo == y[index]) > 0.8  # mostly right


def test_a_frozen_encoder_stays_frozen_in_the_rounds(digits, monkeypatch):
    rounds = []
    finetune = training.finetune

    def spy(classifier, encoder, x, y, validation_data, **kwargs):
        rounds.append(kwargs["trainable"])
        return finetune(classifier, encoder, x, y, validation_data, **kwargs)

    monkeypatch.setattr(training, "finetune", spy)
    classifier, _ = fit_pca_head(digits, "classify.self_training_rounds=1")
    assert rounds == [False]
    weights = baselines.fit_pca(digits["x_train"], 16)["components"].T
    kernel = classifier.get_layer("pca_encoder").get_layer("code").get_weights()[0]
    assert np.allclose(kernel, weights, atol=1e-6)  # the PCA projection as it was


def test_no_rounds_by_default(digits, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("self-training ran with its defaults")

    monkeypatch.setattr(training, "self_training_labels", fail)
    classifier, _ = fit_pca_head(digits)
    _, accuracy = classifier.evaluate(digits["x_test"], digits["y_test"], verbose=0)
    assert accuracy > 0.6


def test_the_labels100_preset_runs_the_chosen_recipe():
    """The recipe benchmarks/few_labels.py chose on the small validation budget (its results
    file) is the one the preset runs."""
    import json

    from benchmarks.few_labels import rounds
    from tests.conftest import ROOT

    chosen = json.loads((ROOT / "benchmarks/results/mnist_few_labels.json").read_text())["chosen"]
    c = validate(make_cfg("experiment=mnist_labels100")).classify
    assert (c.labels_per_class, c.label_spreading, c.finetune) == (10, True, True)
    assert c.self_training_rounds == rounds(chosen)
    assert c.self_training_rounds == 0 or chosen.split(" + ")[-1].startswith(
        c.self_training_source
    )
