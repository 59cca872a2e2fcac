"""100 MNIST labels (10 per class): few-label recipes side by side over seeds, each scored on
a small validation budget (10 labels per class drawn from the validation split, the same size
as the training budget: what a real 100-label setting could hold out) and on the test set.

Per seed, one chain of recipes, each going on from the one before it, so that the expensive
parts are shared:

  spread             the conv autoencoder's encoder frozen under a head trained on the 10
                     labels per class spread over a 10-NN graph of its codes (the old preset)
  + finetune         then the encoder fine-tuned on the same spread labels
  + predictions xN   then N self-training rounds on the classifier's confident predictions
                     (N = 1, 2)
  + spreading xN     from "+ finetune" again: N rounds on labels spread over the fine-tuned
                     encoder's codes (confident ones only; N = 1, 2, 3)

The choice among them is made on the small validation column alone; the test column is printed
for every recipe but chooses nothing. The pseudo-label column (how many of the training labels
a round trained on were right) reads the training images' true labels: a diagnostic only.

Each seed's autoencoder is trained once and cached in .cache/few_labels/ (keyed by the
dataset, model, bottleneck, seed and pretraining settings, not by the code). Each seed's rows
go to the results file as soon as the seed is done, with the commit and date that measured
them: a later run with the same overrides keeps the seeds already there and runs the others
(so five seeds can be measured over several sittings), and prints the table without training
when all are there.

Usage (from the repository root; the time per seed, pretraining included, is published in
docs/mnist.md from the results file):
  python -m benchmarks.few_labels                          # seeds 42 43 44 45 46
  python -m benchmarks.few_labels --seeds 42 classify.self_training_confidence=0.95
  python -m benchmarks.few_labels --fresh                  # retrain (the autoencoders stay)

The summary, the chosen recipe and every seed's rows go to benchmarks/results/mnist_few_labels.json
(with the command, commit, date, machine and load).

The machine's OPENBLAS_* settings (/work/.library/env) slow numpy's and scikit-learn's BLAS
(label spreading, PCA); Keras' own kernels do not use it. Times are wall times on a shared
machine: upper bounds.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks._common from the repository root
from benchmarks._common import meta, write_results  # noqa: E402

DATA = "../shared/data/mnist.npz"  # relative to the repository root
CACHE = ROOT / ".cache" / "few_labels"
PRESET = "experiment=mnist_labels100"
ROUNDS = {"predictions": 2, "spreading": 3}  # self-training rounds per source

log = logging.getLogger("few_labels")


def config(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir

    from src.config import validate

    base = [f"dataset.path={DATA}", "mlflow.enabled=false", PRESET]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return validate(compose(config_name="config", overrides=base + overrides))


def cached_encoder(cfg: Any, arrays: dict[str, np.ndarray]) -> tuple[Any, dict[str, float]]:
    """(encoder, wall and CPU seconds its pretraining took): trained once, then loaded from the
    cache."""
    from omegaconf import OmegaConf

    from src import models, training
    from src.config import config_hash

    inputs = OmegaConf.create(
        {k: cfg[k] for k in ("model", "bottleneck", "seed", "pretrain", "dataset")}
    )
    path = CACHE / f"encoder-{config_hash(inputs)}.keras"
    if path.is_file():
        record = json.loads(path.with_suffix(".json").read_text())
        return models.load(path), {k: record[k] for k in ("seconds", "cpu")}
    p = cfg.pretrain
    start, cpu = time.perf_counter(), time.process_time()
    _, encoder, _ = training.fit_autoencoder(
        arrays["x_train"], arrays["x_val"], model=cfg.model, bottleneck=cfg.bottleneck,
        epochs=p.epochs, batch_size=p.batch_size, learning_rate=p.learning_rate, loss=p.loss,
        seed=cfg.seed, noise_factor=p.noise_factor, patience=p.patience,
    )  # fmt: skip
    seconds = {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}
    models.save(encoder, path)
    record = {**seconds, **OmegaConf.to_container(inputs)}
    path.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return encoder, seconds


def accuracy(classifier: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(classifier.predict(x, batch_size=1024, verbose=0).argmax(1) == y))


def run_seed(seed: int, overrides: list[str]) -> list[dict[str, Any]]:
    """The chain of recipes for one seed: a row per recipe."""
    import keras

    from src import classify, data, training
    from src.train import prepared_data

    keras.backend.clear_session()
    cfg = config([f"seed={seed}", *overrides])
    arrays, _ = prepared_data(cfg)
    encoder, pretrain = cached_encoder(cfg, arrays)
    labels, settings = classify.label_settings(cfg), classify.head_settings(cfg, 10)
    small = data.labelled_subset(arrays["y_val"], cfg.classify.labels_per_class, seed)
    x_small, y_small = arrays["x_val"][small], arrays["y_val"][small]
    rows: list[dict[str, Any]] = []
    clock = {"start": time.perf_counter(), "cpu": time.process_time()}

    def row(recipe: str, classifier: Any, pseudo: tuple[np.ndarray, np.ndarray]) -> None:
        index, y = pseudo
        first = 0 if rows else 1  # spread's step includes pretraining the autoencoder
        rows.append({
            "recipe": recipe, "seed": seed,
            "small_val": accuracy(classifier, x_small, y_small),
            "test": accuracy(classifier, arrays["x_test"], arrays["y_test"]),
            "n_labels": len(y), "pseudo_right": float(np.mean(y == arrays["y_train"][index])),
            "seconds": time.perf_counter() - clock["start"] + first * pretrain["seconds"],
            "cpu_seconds": time.process_time() - clock["cpu"] + first * pretrain["cpu"],
        })  # fmt: skip
        clock.update(start=time.perf_counter(), cpu=time.process_time())
        print(f"seed {seed}: {rows[-1]}", flush=True)

    # spread: the head on the frozen encoder (fine-tuning and rounds off)
    codes = training.encode(encoder, arrays["x_train"])
    index, y = training.training_labels(codes, arrays["y_train"], **labels)
    index = np.arange(len(y)) if index is None else index
    first = {**settings, "finetune_epochs": 0}
    classifier, history = training.fit_on_labels(
        encoder, arrays, {**labels, "self_training_rounds": 0}, first
    )
    row("spread", classifier, (index, y))
    # + finetune, as fit_classifier fine-tunes
    epochs = len(history["loss"])
    history = training.finetune(
        classifier, encoder, arrays["x_train"][index], y, (arrays["x_val"], arrays["y_val"]),
        trainable=True, epochs=cfg.classify.finetune_epochs,
        learning_rate=settings["finetune_learning_rate"], batch_size=settings["batch_size"],
        initial_epoch=epochs,
    )  # fmt: skip
    epochs += len(history["loss"])
    row("+ finetune", classifier, (index, y))
    finetuned = classifier.get_weights()
    for source, n_rounds in ROUNDS.items():
        classifier.set_weights(finetuned)
        done = epochs
        for n in range(1, n_rounds + 1):  # as fit_on_labels' rounds
            round_labels = {**labels, "self_training_source": source}
            index, y = training.self_training_labels(classifier, encoder, arrays, round_labels)
            history = training.finetune(
                classifier, encoder, arrays["x_train"][index], y,
                (arrays["x_val"], arrays["y_val"]), trainable=True,
                epochs=labels["self_training_epochs"],
                learning_rate=settings["finetune_learning_rate"],
                batch_size=settings["batch_size"], initial_epoch=done,
            )  # fmt: skip
            done += len(history["loss"])
            row(f"+ finetune + {source} x{n}", classifier, (index, y))
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per recipe, in chain order: mean and 95 % interval over the seeds."""
    from src.sweeps.summary import interval

    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    out = []
    for recipe in recipes:
        runs = [r for r in rows if r["recipe"] == recipe]
        line: dict[str, Any] = {"recipe": recipe, "n": len(runs)}
        for key in ("small_val", "test", "pseudo_right", "n_labels", "seconds"):
            line[key] = interval([r[key] for r in runs])
        line["total"] = interval([recipe_seconds(rows, r["seed"], recipe) for r in runs])
        line["total_cpu"] = interval(
            [recipe_seconds(rows, r["seed"], recipe, "cpu_seconds") for r in runs]
        )
        line["tests"] = [r["test"] for r in runs]
        out.append(line)
    return out


def recipe_seconds(
    rows: list[dict[str, Any]], seed: int, recipe: str, key: str = "seconds"
) -> float:
    """Wall (or CPU: key="cpu_seconds") time of a recipe on its own, pretraining included: its
    step and the steps of the chain before it (spread, + finetune, the same source's earlier
    rounds)."""
    chain = ["spread"] if recipe == "spread" else ["spread", "+ finetune"]
    if " x" in recipe:
        source = recipe.rsplit(" x", 1)[0]
        chain += [f"{source} x{n}" for n in range(1, rounds(recipe) + 1)]
    return sum(r[key] for r in rows if r["seed"] == seed and r["recipe"] in chain)


def kept_rows(tag: str) -> dict[int, list[dict[str, Any]]]:
    """The rows of each seed already in the results file, if measured with the same overrides."""
    path = ROOT / "benchmarks" / "results" / "mnist_few_labels.json"
    kept = json.loads(path.read_text()) if path.is_file() else {}
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for r in kept.get("rows", []) if kept.get("tag") == tag else []:
        by_seed.setdefault(r["seed"], []).append(r)
    return by_seed


def rounds(recipe: str) -> int:
    """Self-training rounds in a recipe's name ("... x2"); 0 for none."""
    return int(recipe.rsplit(" x", 1)[1]) if " x" in recipe else 0


def fmt(v: tuple[float, float, float], digits: int = 4) -> str:
    mean, low, high = v[0], max(v[1], 0.0), min(v[2], 1.0)  # an accuracy stops at 0 and 1
    if np.isnan(v[1]):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44, 45, 46])
    parser.add_argument("--fresh", action="store_true", help="retrain, ignoring kept results")
    parser.add_argument("overrides", nargs="*", help="config overrides on top of the preset")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = meta()
    os.chdir(ROOT)  # dataset.path and paths.cache are relative to the repository root
    CACHE.mkdir(parents=True, exist_ok=True)
    from omegaconf import OmegaConf

    from src.config import config_hash

    # the base settings, so that the default config's keys are held fixed
    tag = config_hash(OmegaConf.create({"overrides": args.overrides, "rounds": ROUNDS}))
    done = kept_rows(tag) if not args.fresh else {}
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:  # each seed's rows go to the results file as soon as it is done
        when = {"commit": started["commit"], "date": started["date"]}
        rows += done.get(seed) or [{**r, **when} for r in run_seed(seed, args.overrides)]
        seeds = list(dict.fromkeys(r["seed"] for r in rows))
        lines = summary(rows)  # a tie goes to fewer self-training rounds, then to the earlier
        best = max(lines, key=lambda s: (s["small_val"][0], -rounds(s["recipe"]), -lines.index(s)))
        values = {"preset": PRESET, "overrides": args.overrides, "tag": tag, "seeds": seeds,
                  "chosen": best["recipe"], "summary": lines, "rows": rows}  # fmt: skip
        write_results("mnist_few_labels", values, started)

    print(f"\n{PRESET} {' '.join(args.overrides)}; seeds {' '.join(map(str, args.seeds))}")
    print("mean [95 % interval] over the seeds (Student's t, src/sweeps/summary.py)\n")
    print(
        "| recipe | n | small val accuracy (100 images, chooses) | test accuracy (10000) | "
        "test per seed | pseudo-labels right (diagnostic) | labels trained on | step time | "
        "recipe time |\n|---|---|---|---|---|---|---|---|---|"
    )
    for s in summary(rows):
        print(
            f"| {s['recipe']} | {s['n']} | {fmt(s['small_val'])} | {fmt(s['test'])} | "
            f"{' '.join(f'{t:.4f}' for t in s['tests'])} | {fmt(s['pseudo_right'], 3)} | "
            f"{s['n_labels'][0]:.0f} | {s['seconds'][0]:.0f} s | {s['total'][0]:.0f} s |"
        )
    print(f"\nchosen on small validation accuracy: {best['recipe']}")
    print(
        "the test columns are printed for every recipe but chose nothing. Times are means per "
        "seed on 2 shared cores: step time is the step's own training (spread's includes "
        "pretraining the autoencoder, as measured when it was trained and cached); recipe time "
        "is the whole recipe, pretraining included. OPENBLAS_* settings on this machine slow "
        "numpy/scikit-learn BLAS (label spreading)."
    )


if __name__ == "__main__":
    main()
