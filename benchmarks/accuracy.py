"""The MNIST accuracy targets: one table of setting, test and validation accuracy, the
same for PCA(k) + the same head, train time and peak memory. Every setting runs in a fresh
process (its own peak memory) through the project's plain functions: data.prepare ->
pretrain.run -> classify.run.

Usage (from the repository root):
  python -m benchmarks.accuracy                                  # every setting
  python -m benchmarks.accuracy --only dense32,conv              # a subset
  python -m benchmarks.accuracy --only conv classify.augment.zoom=0.2  # with overrides

Tune on the validation columns; the test columns are the result.
"""

import argparse
import logging
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = "../shared/data/mnist.npz"  # Keras' four arrays; relative to the repository root

# name -> (config overrides: a preset of conf/experiment/, target on the MNIST test set,
# a published or measured reference)
SETTINGS = {  # the targets first, then the rest of the bottleneck sweep
    "dense32": (["experiment=mnist_dense32"], 0.980, "PCA(32)+LR 0.901, raw-pixel LR 0.926"),
    "conv": (["experiment=mnist_conv"], 0.993, "LeNet-5 0.9905"),
    "labels100": (["experiment=mnist_labels100"], 0.967, "M1+TSVM 0.882, M1+M2 0.9667"),
    **{
        f"dense{k}": ([f"experiment=mnist_dense{k}"], None, f"PCA({k})+LR {ref}")
        for k, ref in [(16, 0.858), (8, 0.791), (4, 0.578), (2, 0.446)]
    },
}


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
    row = {"k": cfg.bottleneck, "time": train_time, "peak_mb": peak_mb}
    for split in ("test", "val"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        row[split] = classifier.evaluate(x, y, verbose=0)[1]
        row[f"pca_{split}"] = pca_classifier.evaluate(x, y, verbose=0)[1]
    queue.put(row)


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
    rows = []
    for name in names:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_setting, args=(name, args.data, args.overrides, queue))
        proc.start()
        proc.join()  # the row is a small dict: it fits in the queue's pipe
        if proc.exitcode != 0:
            raise SystemExit(f"error: setting {name} failed (exit code {proc.exitcode})")
        rows.append((name, queue.get()))
        print(f"done {name}: {rows[-1][1]}", flush=True)

    print(f"\nMNIST: test set (10000) and validation split accuracy, {len(rows)} settings\n")
    print(
        "| setting | k | test accuracy | PCA(k) + same head | target | val accuracy | PCA val |"
        " train time | peak RSS | reference |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for name, r in rows:
        _, target, reference = SETTINGS[name]
        target = f"≥ {target}" if target else "> PCA"
        print(
            f"| {name} | {r['k']} | {r['test']:.4f} | {r['pca_test']:.4f} | {target} | "
            f"{r['val']:.4f} | {r['pca_val']:.4f} | {r['time']:.0f} s | "
            f"{r['peak_mb'] / 1024:.2f} GiB | {reference} |"
        )
    print("\nsettings (on top of dataset=mnist and the defaults in conf/):")
    for name, _ in rows:
        print(f"  {name}: {' '.join(SETTINGS[name][0])}")


if __name__ == "__main__":
    main()
