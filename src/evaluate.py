"""Stage 4: test accuracy and loss, reconstruction error, comparison with the PCA and raw-pixel
baselines, t-SNE maps of the codes, figures and a self-contained HTML report."""

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from src import cli
from src.cache import NO_CACHE, Cache, code_md5
from src.files import Outputs

log = logging.getLogger(__name__)

PARAMS = ["bottleneck", "dropout", "seed", "classify", "evaluate", "dataset.name"]


def raw_baseline(cfg: DictConfig, arrays: dict[str, np.ndarray], cache: Cache) -> np.ndarray:
    """Test predictions of the raw-pixel baseline, trained on the labels the classifiers get.
    It needs only the data and those labels: src.train computes it while the networks train."""
    from src import baselines, data

    n = cfg.classify.labels_per_class

    def raw() -> dict[str, np.ndarray]:
        x, y = data.labelled(arrays["x_train"], arrays["y_train"], n, cfg.seed)
        model = baselines.fit_raw_baseline(x, y)
        return {"predicted": model.predict(baselines.flat(arrays["x_test"]))}

    labels = {"labels_per_class": n, "seed": cfg.seed if n is not None else None}
    return cache.arrays("raw-baseline", labels, raw)["predicted"]


def compare(
    cfg: DictConfig, arrays: dict[str, np.ndarray], out: Path, loaded: dict, cache: Cache
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(metrics, predicted test labels per method) of the classifier and both baselines."""
    from src import baselines, metrics, models

    p = cfg.paths
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    classifier = models.load(out / p.classifier)
    scores, predicted = metrics.classifier_metrics(classifier, x_test, y_test)
    val_predicted = classifier.predict(arrays["x_val"], verbose=0).argmax(axis=1)
    scores["val_accuracy"] = metrics.accuracy(arrays["y_val"], val_predicted)  # to choose on
    autoencoder, pca = loaded["autoencoder"], loaded["pca"]
    preds = {
        "autoencoder": predicted,
        "pca": models.load(out / p.pca_classifier).predict(x_test, verbose=0).argmax(axis=1),
        "raw": raw_baseline(cfg, arrays, cache),
        "scratch": models.load(out / p.scratch_classifier).predict(x_test, verbose=0).argmax(1),
    }
    accuracy = {name: metrics.accuracy(y_test, pred) for name, pred in preds.items()}
    scores.update(
        test_reconstruction_mse=metrics.reconstruction_mse(
            x_test, autoencoder.predict(x_test, verbose=0)
        ),
        pca_test_accuracy=accuracy["pca"],
        raw_test_accuracy=accuracy["raw"],
        scratch_test_accuracy=accuracy["scratch"],
        ae_minus_pca_accuracy=accuracy["autoencoder"] - accuracy["pca"],
        ae_minus_raw_accuracy=accuracy["autoencoder"] - accuracy["raw"],
        ae_minus_scratch_accuracy=accuracy["autoencoder"] - accuracy["scratch"],
        pca_reconstruction_mse=metrics.reconstruction_mse(
            x_test, baselines.pca_reconstruct(pca, x_test)
        ),
    )
    return scores, preds


def code_maps(
    cfg: DictConfig, arrays: dict[str, np.ndarray], loaded: dict, cache: Cache
) -> dict[str, Any]:
    """t-SNE maps of a random subset of the test images' codes (the pretrained encoder's and
    the PCA's), and the k-NN accuracy on each map."""
    from threadpoolctl import threadpool_limits

    from src import baselines, metrics

    e = cfg.evaluate
    subset = metrics.tsne_subset(len(arrays["y_test"]), e.tsne_max_samples, cfg.seed)
    x, y = arrays["x_test"][subset], arrays["y_test"][subset]
    encoder, pca = loaded["autoencoder"].get_layer("encoder"), loaded["pca"]
    which = {"max_samples": e.tsne_max_samples, "seed": cfg.seed}
    codes = {"autoencoder": encoder.predict(x, verbose=0), "pca": baselines.pca_codes(pca, x)}
    inputs = {"autoencoder": {"autoencoder": loaded["autoencoder_md5"]},
              "pca": {"bottleneck": cfg.bottleneck}}  # fmt: skip
    code_md5(code_maps)  # the cache keys' reading of src/ with ast: here, not in the threads
    # Each map runs on one thread (benchmarks/README.md): both at once use both cores. The
    # limit is process-wide: set once around both, so that neither thread lifts the other's.
    with threadpool_limits(1), ThreadPoolExecutor(2) as pool:
        futures = {
            m: pool.submit(cache.arrays, f"tsne-{m}", {**which, **inputs[m]},
                           lambda m=m: {"map": metrics.tsne_map(codes[m], cfg.seed)})
            for m in ("autoencoder", "pca")
        }  # fmt: skip
    maps = {m: f.result()["map"] for m, f in futures.items()}
    knn = {
        m: metrics.knn_accuracy(points, y, e.knn_neighbors, cfg.seed) for m, points in maps.items()
    }
    return {"maps": maps, "knn": knn, "y": y}


def draw(cfg: DictConfig, arrays: dict, out: Path, figures: Path, ev: dict) -> None:
    """Every figure of the report into the folder `figures`."""
    from src import baselines, data, metrics, plots, report

    p, e, m = cfg.paths, cfg.evaluate, ev["metrics"]
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    names = [str(c) for c in arrays["class_names"]]
    history = [
        data.load_history(out / p.pretrain_history),
        data.load_history(out / p.classify_history),
    ]
    plots.history(*history, figures / "history.png")
    plots.confusion(
        y_test, ev["predicted"]["autoencoder"], names, figures / "confusion_matrix.png"
    )
    per_class = {
        f"{report.METHODS[k]} ({metrics.accuracy(y_test, pred):.3f})": ev["per_class"][k]
        for k, pred in ev["predicted"].items()
    }
    plots.per_class_accuracy(per_class, names, figures / "per_class_accuracy.png")
    codes, maps = {"autoencoder": "autoencoder codes", "pca": "PCA codes"}, ev["maps"]
    titles = {
        f"t-SNE of {len(maps['y'])} test images' {codes[k]} ({cfg.bottleneck}-D)\n"
        f"{e.knn_neighbors}-NN accuracy on this map: {maps['knn'][k]:.3f}": points
        for k, points in maps["maps"].items()
    }
    plots.tsne(titles, maps["y"], names, figures / "tsne.png")
    shown = plots.examples(y_test, e.n_reconstructions)
    rows = {
        f"autoencoder\n(test MSE {m['test_reconstruction_mse']:.4f})": (
            ev["autoencoder"].predict(x_test[shown], verbose=0)
        ),
        f"PCA\n(test MSE {m['pca_reconstruction_mse']:.4f})": baselines.pca_reconstruct(
            ev["pca"], x_test[shown]
        ),
    }
    plots.reconstructions(
        x_test[shown], rows, [names[c] for c in y_test[shown]], figures / "reconstructions.png"
    )


def evaluation(
    cfg: DictConfig, arrays: dict[str, np.ndarray], out: Path, cache: Cache
) -> dict[str, Any]:
    """Everything the outputs show: metrics, predictions, per-class accuracy, t-SNE maps, and
    the autoencoder and PCA they came from."""
    from src import baselines, files, metrics, models

    p = cfg.paths
    loaded = {
        "autoencoder": models.load(out / p.autoencoder),
        "autoencoder_md5": files.file_md5(out / p.autoencoder),
        "pca": baselines.load_pca(out / p.pca),
    }
    scores, predicted = compare(cfg, arrays, out, loaded, cache)
    maps = code_maps(cfg, arrays, loaded, cache)
    scores.update(
        latent_knn_accuracy=maps["knn"]["autoencoder"], pca_latent_knn_accuracy=maps["knn"]["pca"]
    )
    n_classes = len(arrays["class_names"])
    per_class = {
        k: metrics.per_class_accuracy(arrays["y_test"], pred, n_classes)
        for k, pred in predicted.items()
    }
    return {"metrics": scores, "predicted": predicted, "per_class": per_class, "maps": maps,
            "autoencoder": loaded["autoencoder"], "pca": loaded["pca"]}  # fmt: skip


def write(cfg: DictConfig, arrays: dict, out: Path, staged: Outputs, ev: dict) -> None:
    """Figures, predictions, per-class accuracy, metrics and the report to their staged paths;
    log the metrics and all of them."""
    from src import files, report, tracking

    p, scores, y_test = cfg.paths, ev["metrics"], arrays["y_test"]
    names = [str(c) for c in arrays["class_names"]]
    draw(cfg, arrays, out, staged(p.figures), ev)
    report.write_predictions(staged(p.predictions), y_test, ev["predicted"]["autoencoder"], names)
    report.write_per_class(staged(p.per_class), ev["per_class"], names)
    files.write_json(
        staged(p.metrics), {**scores, "bottleneck": cfg.bottleneck, "dropout": cfg.dropout}
    )
    report.write_report(
        staged(p.report), staged(p.figures), scores, dataset=cfg.dataset.name,
        bottleneck=cfg.bottleneck, dropout=cfg.dropout, classify=cfg.classify,
        seed=cfg.seed, knn_neighbors=cfg.evaluate.knn_neighbors, n_test=len(y_test),
        n_tsne=len(ev["maps"]["y"]),
    )  # fmt: skip
    tracking.log_metrics(scores)
    for name in (p.metrics, p.predictions, p.per_class, p.report):
        tracking.log_artifact(staged(name), "evaluation")
    for png in sorted(staged(p.figures).glob("*.png")):
        tracking.log_artifact(png, "evaluation")


def run(
    cfg: DictConfig, arrays: dict[str, np.ndarray], out: Path = Path("."), cache: Cache = NO_CACHE
) -> dict[str, float]:
    """Evaluate the classifiers and baselines under `out`; write metrics, tables, figures and
    report under `out` together; log them. `cache` reuses the raw-pixel baseline and the t-SNE
    maps from earlier runs (src.train)."""
    from src import files

    p = cfg.paths
    ev = evaluation(cfg, arrays, out, cache)
    outputs = [p.metrics, p.predictions, p.per_class, p.figures, p.report]
    with files.outputs(out, outputs) as staged:
        write(cfg, arrays, out, staged, ev)
    scores = ev["metrics"]
    log.info(
        "test accuracy: autoencoder %.4f, PCA %.4f, raw pixels %.4f, from scratch %.4f",
        scores["test_accuracy"], scores["pca_test_accuracy"], scores["raw_test_accuracy"],
        scores["scratch_test_accuracy"],
    )  # fmt: skip
    return scores


@cli.checked_choices
@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    cli.run_stage(cfg, "evaluate", PARAMS, run)


if __name__ == "__main__":
    main()
