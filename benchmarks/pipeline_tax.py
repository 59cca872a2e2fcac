"""Pipeline tax: the same MNIST autoencoder training (dense 784-128-64-32, same epochs, batch
size and learning rate) as the project's DVC stage `python -m src.pretrain` (Hydra + MLflow +
model saving) and as the tutorial's plain Keras script (benchmarks/tutorial_plain_keras.py).

Usage: python benchmarks/pipeline_tax.py [--epochs 10] [--batch-size 256] [--repeats 3] [--full]
Every command is a fresh process (imports included) in its own temporary folder. The stage reads
MNIST as a prepared .npz written here in the project's format (same train/val split as the
script). --full also compares `python -m src.train experiment=mnist` (every stage, evaluate
included) with the script's autoencoder + classifier, once the mnist dataset config exists.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import (
    MNIST,
    ROOT,
    blas_env,
    header,
    load_avg,
    load_mnist,
    median,
    meta,
    table,
    write_results,
)

PLAIN = ROOT / "benchmarks" / "tutorial_plain_keras.py"


def write_prepared(path: Path) -> None:
    """MNIST in the layout src.data.save writes (what src.pretrain reads as paths.prepared)."""
    arrays = load_mnist()
    arrays["class_names"] = np.array([str(c) for c in range(10)])
    arrays["pixel_range"] = np.array([0.0, 255.0], dtype=np.float32)
    np.savez(path, **arrays)


def run(cmd: list[str], workdir: Path, store: str) -> tuple[float, str]:
    """Wall time of `cmd` in `workdir` (importing this repository's src, private MLflow store)
    and the quality it reached: val loss, and test accuracy where a classifier was trained."""
    workdir.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": store}
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=workdir, env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if (workdir / "run" / "result.json").is_file():  # src.train
        result = json.loads((workdir / "run" / "result.json").read_text())
        return seconds, f"test acc {result['test_accuracy']:.4f}"
    history = workdir / "reports" / "pretrain_history.csv"
    if history.is_file():  # src.pretrain
        val_loss = float(list(csv.DictReader(history.open()))[-1]["val_loss"])
        return seconds, f"val loss {val_loss:.5f}"
    result = json.loads(out.stdout.strip().splitlines()[-1])  # the plain script
    acc = f", test acc {result['test_accuracy']:.4f}" if "test_accuracy" in result else ""
    return seconds, f"val loss {result['val_loss']:.5f}{acc}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="also src.train vs the whole script")
    a = parser.parse_args()
    started = meta()
    print(header("Pipeline tax (MNIST, dense AE bottleneck 32)"))
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-tax-"))
    prepared = tmp / "prepared.npz"
    write_prepared(prepared)
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    subprocess.run(  # create the store once, outside the timings
        [sys.executable, "-c", f"import mlflow; mlflow.set_tracking_uri('{store}'); "
         "mlflow.set_experiment('ae-classify')"], check=True, capture_output=True,
    )  # fmt: skip
    e, b, lr = a.epochs, a.batch_size, a.learning_rate
    plain = [sys.executable, str(PLAIN), f"--data={MNIST}", f"--epochs={e}", f"--batch-size={b}"]
    plain.append(f"--learning-rate={lr}")
    stage = [
        sys.executable, "-m", "src.pretrain", "--config-dir", str(ROOT), "--config-name",
        "params", f"paths.prepared={prepared}", "model.hidden=[128,64]", "bottleneck=32",
        f"pretrain.epochs={e}",
        f"pretrain.batch_size={b}", f"pretrain.learning_rate={lr}",
    ]  # fmt: skip
    variants = {
        "plain Keras script (reference), autoencoder only": [*plain, "--ae-only"],
        "python -m src.pretrain, mlflow.enabled=false": [*stage, "mlflow.enabled=false"],
        "python -m src.pretrain, mlflow.enabled=true (default)": [*stage, "mlflow.enabled=true"],
    }
    mnist_config = (ROOT / "conf" / "experiment" / "mnist.yaml").is_file()
    if a.full and mnist_config:
        variants["plain Keras script, autoencoder + classifier"] = plain
        variants["python -m src.train experiment=mnist (all stages)"] = [
            sys.executable, "-m", "src.train", "experiment=mnist", f"dataset.path={MNIST}",
            "model.hidden=[128,64]", "bottleneck=32",
            f"pretrain.epochs={e}", f"pretrain.batch_size={b}", f"classify.epochs={e}",
            f"classify.batch_size={b}", "sweep.reuse_autoencoder=false", "hydra.run.dir=run",
        ]  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in variants}
    quality: dict[str, list[str]] = {k: [] for k in variants}
    loads = []
    for r in range(a.repeats):
        for name, cmd in variants.items():
            work = tmp / f"{r}-{len(times[name])}-{abs(hash(name))}"
            seconds, reached = run(cmd, work, store)
            times[name].append(seconds)
            quality[name].append(reached)
            loads.append(load_avg())
            print(f"repeat {r + 1} {name}: {times[name][-1]:.2f}", file=sys.stderr)
    ref = median(times["plain Keras script (reference), autoencoder only"])
    rows, per_command = [], {}
    for name in variants:
        t = median(times[name])
        rows.append([name, f"{t:.2f}", f"{t / ref:.2f}", f"{t - ref:+.2f}", quality[name][-1]])
        per_command[name] = {"seconds": times[name], "median": t, "x_plain": t / ref,
                             "extra": t - ref, "reached": quality[name]}  # fmt: skip
    print(
        table(
            ["command", "wall (s, median)", "x plain", "extra (s)", "reached (last repeat)"], rows
        )
    )
    print(
        f"\n{e} epochs, batch {b}, learning rate {lr}; {a.repeats} repeats, round-robin; "
        f"load average after each run: {', '.join(loads)}\nTarget: pipeline <= 1.10 x plain."
    )
    if a.full and not mnist_config:
        print("\n--full skipped: conf/experiment/mnist.yaml does not exist on this branch yet.")
    write_results("pipeline_tax", {"epochs": e, "batch": b, "learning_rate": lr,
                                   "repeats": a.repeats, "loads": loads, "target": 1.10,
                                   "blas_env": blas_env(),
                                   "commands": per_command}, started)  # fmt: skip


if __name__ == "__main__":
    main()
