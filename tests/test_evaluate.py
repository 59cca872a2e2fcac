"""Baselines, t-SNE/k-NN scores, figures and the HTML report that the evaluate stage uses."""

import base64
import re

import numpy as np
import pytest

from src import baselines, classify, metrics, models, plots, report
from tests.conftest import make_cfg

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1000
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_scratch_baseline_trains_the_same_architecture_end_to_end(digits):
    import keras

    cfg = make_cfg("bottleneck=8", "dropout=0.3", "classify.epochs=3", "classify.patience=null")
    settings, labels = classify.head_settings(cfg, 10), classify.label_settings(cfg)
    keras.utils.set_random_seed(cfg.seed)
    _, untrained = models.build(cfg.model, digits["x_train"].shape[1:], cfg.bottleneck)
    clf = baselines.fit_scratch_classifier(cfg.model, cfg.bottleneck, digits, labels, settings)
    encoder = clf.get_layer("encoder")
    assert encoder.trainable and encoder.output_shape[-1] == 8  # not frozen: trained end to end
    assert [w.shape for w in encoder.get_weights()] == [w.shape for w in untrained.get_weights()]
    assert not np.allclose(encoder.get_weights()[0], untrained.get_weights()[0])  # it trained
    assert clf.get_layer("head_dropout").rate == 0.3 and clf.get_layer("head_dense").units == 64
    accuracy = np.mean(clf.predict(digits["x_test"], verbose=0).argmax(1) == digits["y_test"])
    assert accuracy > 0.5  # chance is 0.1, after 3 epochs


def test_pca_baseline_uses_the_training_split_the_bottleneck_and_the_same_head(digits, tmp_path):
    from sklearn.decomposition import PCA

    cfg = make_cfg("bottleneck=8", "dropout=0.3", "classify.epochs=2", "classify.head_units=16")
    pca = baselines.fit_pca(digits["x_train"], cfg.bottleneck)
    settings = classify.head_settings(cfg, 10)
    clf = baselines.fit_pca_classifier(pca, digits, classify.label_settings(cfg), settings)
    x_train = digits["x_train"].reshape(len(digits["x_train"]), -1)
    assert pca["components"].shape == (8, 64)
    np.testing.assert_allclose(pca["mean"], x_train.mean(axis=0), atol=1e-6)  # train split only
    baselines.save_pca(pca, tmp_path / "pca.npz")  # what evaluate loads instead of refitting
    loaded = baselines.load_pca(tmp_path / "pca.npz")
    assert all(np.array_equal(loaded[k], pca[k]) for k in pca)

    pca_encoder = clf.get_layer("pca_encoder")
    x = digits["x_test"][:20]
    codes = pca_encoder.predict(x, verbose=0)
    reference = PCA(8).fit(x_train).transform(x.reshape(20, -1))  # scikit-learn's, up to sign
    np.testing.assert_allclose(np.abs(codes), np.abs(reference), atol=1e-3)
    np.testing.assert_allclose(codes, baselines.pca_codes(loaded, x), atol=1e-4)
    assert not pca_encoder.trainable  # frozen like the autoencoder's encoder (freeze_encoder)
    assert clf.get_layer("head_dense").units == 16
    assert clf.get_layer("head_dropout").rate == 0.3
    accuracy = np.mean(clf.predict(digits["x_test"], verbose=0).argmax(1) == digits["y_test"])
    assert accuracy > 0.3  # chance is 0.1, after 2 epochs


def test_raw_pixel_baseline_is_logistic_regression_on_the_training_split(digits):
    raw = baselines.fit_raw_baseline(digits["x_train"], digits["y_train"])
    assert raw.n_features_in_ == 64 and list(raw.classes_) == list(range(10))
    x_test = digits["x_test"].reshape(len(digits["x_test"]), -1)
    assert np.mean(raw.predict(x_test) == digits["y_test"]) > 0.9


@pytest.mark.parametrize("n, limit", [(360, 2000), (360, 100), (5000, 2000)])
def test_tsne_subset_respects_the_limit(n, limit):
    subset = metrics.tsne_subset(n, limit, seed=0)
    assert len(subset) == min(n, limit) == len(set(subset))
    assert np.all(np.diff(subset) > 0) and subset.min() >= 0 and subset.max() < n
    if n > limit:  # a random draw: another seed picks other samples
        assert not np.array_equal(subset, metrics.tsne_subset(n, limit, seed=1))


def test_pca_reconstruction_error_falls_with_more_components(digits):
    x_train, x_test = digits["x_train"], digits["x_test"]
    mse = []
    for n in (2, 16, 64):
        recon = baselines.pca_reconstruct(baselines.fit_pca(x_train, n), x_test)
        assert recon.shape == x_test.shape
        mse.append(float(np.mean((recon - x_test) ** 2)))
    assert mse[0] > mse[1] > mse[2] and mse[2] < 1e-10  # all 64 components: exact


def test_knn_on_a_tsne_map_finds_digit_classes_and_not_shuffled_labels(digits):
    x, y = digits["x_test"], digits["y_test"]
    points = metrics.tsne_map(x, seed=0)
    assert points.shape == (len(x), 2) and np.isfinite(points).all()
    assert metrics.knn_accuracy(points, y, 5, seed=0) > 0.85
    shuffled = np.random.default_rng(0).permutation(y)
    assert metrics.knn_accuracy(points, shuffled, 5, seed=0) < 0.3  # chance is 0.1


def test_examples_take_the_classes_in_turn():
    y = np.array([3, 1, 1, 0, 2, 3, 0, 2, 1])
    picked = plots.examples(y, 6)
    assert list(y[picked]) == [0, 1, 2, 3, 0, 1]
    assert len(set(picked)) == 6


def test_per_class_accuracy():
    y = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0, 0])
    assert metrics.per_class_accuracy(y, pred, 4) == pytest.approx([0.5, 2 / 3, 0.0, 0.0])


def test_figures_are_pngs_with_a_row_per_reconstruction(digits, tmp_path):
    x, y = digits["x_test"][:10], digits["y_test"][:10]
    labels = [str(c) for c in y]
    plots.reconstructions(x, {"autoencoder": x, "PCA": x}, labels, tmp_path / "r.png")
    plots.reconstructions(x, {"autoencoder": x, "PCA": x}, labels, tmp_path / "n.png", noisy=x)
    (w, h), (wn, hn) = _png_size(tmp_path / "r.png"), _png_size(tmp_path / "n.png")
    assert wn == w and hn > h  # the noisy-input row adds height
    names = [str(i) for i in range(10)]
    plots.per_class_accuracy({"a": [0.9] * 10, "b": [1.0] * 10}, names, tmp_path / "p.png")
    rng = np.random.default_rng(0)
    maps = {"left": rng.random((50, 2)), "right": rng.random((50, 2))}
    plots.tsne(maps, rng.integers(0, 10, 50), names, tmp_path / "t.png")
    assert _png_size(tmp_path / "t.png")[0] > _png_size(tmp_path / "p.png")[0] * 0.8
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def test_report_is_self_contained_html_with_the_table_and_every_figure(digits, tmp_path):
    names = [str(i) for i in range(10)]
    pngs = []
    for i in range(2):
        pngs.append(tmp_path / f"f{i}.png")
        plots.per_class_accuracy({"m": [0.5 + i / 4] * 10}, names, pngs[-1])
    table = [["model", "test accuracy"], ["autoencoder", "0.9750"], ["PCA <b>", "0.9611"]]
    report.html_page(
        tmp_path / "r.html", "Title", "intro", table, [("one", pngs[0]), ("two", pngs[1])]
    )
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<td>0.9611</td>" in page
    assert "PCA &lt;b&gt;" in page  # escaped
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(e) for e in embedded] == [p.read_bytes() for p in pngs]
    assert len(re.findall(r"src=", page)) == 2  # nothing else is loaded


def test_report_names_every_method_in_its_title_and_each_difference(tmp_path):
    m = {"test_accuracy": 0.9722, "pca_test_accuracy": 0.9889, "raw_test_accuracy": 0.9667,
         "scratch_test_accuracy": 0.9833, "ae_minus_pca_accuracy": -0.0167,
         "ae_minus_raw_accuracy": 0.0055, "ae_minus_scratch_accuracy": -0.0111,
         "test_reconstruction_mse": 0.0041, "pca_reconstruction_mse": 0.0027,
         "latent_knn_accuracy": 0.914, "pca_latent_knn_accuracy": 0.936}  # fmt: skip
    for name in report.FIGURES:
        (tmp_path / name).write_bytes(PNG)
    report.write_report(tmp_path / "r.html", tmp_path, m, dataset="digits", bottleneck=32,
                        dropout=0.2, classify=make_cfg().classify, seed=42, knn_neighbors=5,
                        n_test=360, n_tsne=360)  # fmt: skip
    page = (tmp_path / "r.html").read_text()
    title = (
        "ae-classify: autoencoder (bottleneck 32) vs PCA, raw pixels and the same network "
        "from scratch"
    )
    assert f"<title>{title}</title>" in page and f"<h1>{title}</h1>" in page
    rows = re.findall(r"<tr><td>(autoencoder − [^<]+)</td><td>([^<]+)</td>", page)
    assert rows == [("autoencoder − PCA", "-0.0167"), ("autoencoder − raw pixels", "+0.0055"),
                    ("autoencoder − from scratch", "-0.0111")]  # fmt: skip
    assert "From scratch: the same encoder architecture and head" in page


def test_linear_encoder_applies_the_given_projection():
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    encoder = models.build_linear_encoder((2, 2, 1), w, np.ones(3, np.float32), "lin")
    x = np.ones((1, 2, 2, 1), dtype=np.float32)
    np.testing.assert_allclose(encoder.predict(x, verbose=0), [w.sum(axis=0) + 1])


def test_training_recipe_names_fine_tuning_augmentation_and_spread_labels():
    plain = report.training_recipe(make_cfg().classify, seed=0)
    assert "encoder frozen" in plain and "fine-tuned" not in plain and "random" not in plain
    recipe = report.training_recipe(
        make_cfg(
            "model=conv",
            "classify.augment.shift=0.1",
            "classify.finetune=true",
            "classify.labels_per_class=10",
            "classify.label_spreading=true",
        ).classify,
        seed=0,
    )
    assert "then fine-tuned 10 epochs" in recipe and "random shift 0.1" in recipe
    assert "labels_per_class=10, spread" in recipe


def test_tables_keep_commas_in_class_names(tmp_path):
    import csv

    names = ["T-shirt, top", 'say "hi"']
    y, predicted = np.array([0, 1, 1]), np.array([0, 0, 1])
    report.write_predictions(tmp_path / "p.csv", y, predicted, names)
    rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert rows == [["actual", "predicted"], [names[0], names[0]], [names[1], names[0]],
                    [names[1], names[1]]]  # fmt: skip
    report.write_per_class(tmp_path / "c.csv", {"autoencoder": [1.0, 0.5]}, names)
    assert list(csv.DictReader((tmp_path / "c.csv").open()))[0]["class"] == names[0]


def test_raw_baseline_tolerance_gives_the_fully_converged_models_predictions(digits):
    from sklearn.linear_model import LogisticRegression

    x_train, x_test = (digits[k].reshape(len(digits[k]), -1) for k in ("x_train", "x_test"))
    raw = baselines.fit_raw_baseline(digits["x_train"], digits["y_train"])
    assert raw.get_params()["C"] == 1.0 and raw.n_iter_[0] < raw.max_iter  # converged to tol
    tight = LogisticRegression(tol=1e-6, max_iter=5000).fit(x_train, digits["y_train"])
    assert np.mean(raw.predict(x_test) == tight.predict(x_test)) >= 0.98
    accuracy = [np.mean(m.predict(x_test) == digits["y_test"]) for m in (raw, tight)]
    assert abs(accuracy[0] - accuracy[1]) <= 0.01


def test_tsne_map_is_deterministic_for_a_seed_and_as_good_as_1000_iterations(digits):
    from sklearn.manifold import TSNE

    x, y = digits["x_test"], digits["y_test"]
    points = metrics.tsne_map(x, seed=0)
    np.testing.assert_array_equal(points, metrics.tsne_map(x, seed=0))
    # (with init="pca" and exact neighbours, scikit-learn's map does not depend on the seed)
    full = TSNE(2, perplexity=30.0, init="pca", max_iter=1000, random_state=0).fit_transform(
        x.reshape(len(x), -1).astype(np.float64)
    )  # the map before: scikit-learn's default iterations and angle
    knn = [metrics.knn_accuracy(p, y, 5, seed=0) for p in (points, full)]
    assert knn[0] >= knn[1] - 0.02
