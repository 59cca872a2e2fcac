"""The MNIST accuracy targets: one table of setting, test and validation accuracy, the
same for PCA(k) + the same head, train time and peak memory. Every setting runs in a fresh
process (its own peak memory) through the project's plain functions: data.prepare ->
pretrain.run -> classify.run.

Usage (from the repository root):
  python -m benchmarks.accuracy                                  # every setting
  python -m benchmarks.accuracy --only dense32,conv              # a subset
  python -m benchmarks.accuracy --only conv classify.augment.zoom=0.2  # with overrides

Tune on the validation columns; the test columns are the result. Each setting's row (with the
command, commit, date, machine and load that measured it) replaces its row in
benchmarks/results/mnist_accuracy.json; `python -m benchmarks.publish` writes docs/mnist.md's
table from that file. PCA(k)+LR and raw-pixel LR (dense32 only) are measured here too.
"""

import argparse
import logging
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks._common from the repository root
from benchmarks._common import load_avg, meta, update_results  # noqa: E402

DATA = "../shared/data/mnist.npz"  # Keras' four arrays; relative to the repository root
RESULTS_NAME = "mnist_accuracy"

# name -> (config overrides: a preset of conf/experiment/, target on the MNIST test set,
# published references: LeCun et al. 1998, Kingma et al. 2014)
SETTINGS = {  # the targets first, then the rest of the bottleneck sweep
    "dense32": (["experiment=mnist_dense32"], 0.980, ""),
    "conv": (["experiment=mnist_conv"], 0.993, "LeNet-5 0.9905"),
    "labels100": (["experiment=mnist_labels100"], 0.967, "M1+TSVM 0.882, M1+M2 0.9667"),
    **{f"dense{k}": ([f"experiment=mnist_dense{k}"], None, "") for k in (16, 8, 4, 2)},
}


def linear_references(name: str, arrays: dict, k: int) -> dict:
    """Logistic regression on k PCA components (and on the raw pixels for dense32): the
    reference column, measured on the same split."""
    from sklearn.linear_model import LogisticRegression

    from src import baselines

    pca = baselines.fit_pca(arrays["x_train"], k)
    codes = {s: baselines.pca_codes(pca, arrays[f"x_{s}"]) for s in ("train", "test")}
    lr = LogisticRegression(max_iter=2000).fit(codes["train"], arrays["y_train"])
    row = {"pca_lr_test": float(lr.score(codes["test"], arrays["y_test"]))}
    if name == "dense32":
        raw = baselines.fit_raw_baseline(arrays["x_train"], arrays["y_train"])
        row["raw_lr_test"] = float(raw.score(baselines.flat(arrays["x_test"]), arrays["y_test"]))
    return row


def run_setting(name: str, data_path: str, extra: list[str], queue) -> None:
    """Train one setting from scratch; put its row (a dict) on the queue."""
    logging.basicConfig(level=logging.WARNING)
    from hydra import compose, initialize_config_dir

    from src import classify, data, models, pretrain
    from src.config import validate

    overrides, _, _ = SETTINGS[name]
    base = [f"dataset.path={data_path}", "mlflow.enabled=false"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=base + overrides + extra)
    cfg = validate(cfg)
    d = cfg.dataset
    arrays = data.prepare(d.name, d.test_size, d.val_size, cfg.seed, d.path, d.class_names)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pretrain.run(cfg, arrays, Path(tmp))
        classify.run(cfg, arrays, Path(tmp))  # also trains the PCA baseline
        train_time = time.perf_counter() - start
        classifier = models.load(Path(tmp) / cfg.paths.classifier)
        # baseline: PCA to the same k, the same head trained the same way on the same labels
        pca_classifier = models.load(Path(tmp) / cfg.paths.pca_classifier)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    row = {"k": cfg.bottleneck, "seed": cfg.seed, "time": train_time, "peak_mb": peak_mb}
    for split in ("test", "val"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        row[split] = float(classifier.evaluate(x, y, verbose=0)[1])
        row[f"pca_{split}"] = float(pca_classifier.evaluate(x, y, verbose=0)[1])
    queue.put({**row, **linear_references(name, arrays, cfg.bottleneck)})


def save(name: str, row: dict, started: dict) -> None:
    """The setting's row, with what measured it, into the results file (other rows kept)."""
    overrides, target, reference = SETTINGS[name]
    entry = {**row, "overrides": overrides, "target": target, "reference": reference,
             **started, "load_at_end": load_avg()}  # fmt: skip
    update_results(RESULTS_NAME, "rows", name, entry, list(SETTINGS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SETTINGS)}")
    parser.add_argument("--data", default=DATA, help="MNIST .npz or IDX folder (dataset.path)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every setting (tuning)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SETTINGS)
    unknown = set(names) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; known: {','.join(SETTINGS)}")

    ctx = multiprocessing.get_context("spawn")  # a fresh process per setting: its own peak
    for name in names:
        started, queue = meta(), ctx.Queue()
        proc = ctx.Process(target=run_setting, args=(name, args.data, args.overrides, queue))
        proc.start()
        proc.join()  # the row is a small dict: it fits in the queue's pipe
        if proc.exitcode != 0:
            raise SystemExit(f"error: setting {name} failed (exit code {proc.exitcode})")
        row = queue.get()
        print(f"done {name}: {row}", flush=True)
        save(name, row, started)

    print("the table: python -m benchmarks.publish (docs/mnist.md)", flush=True)


if __name__ == "__main__":
    main()
