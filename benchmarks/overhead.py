"""What the pipeline costs on top of its training: `python -m src.train` on MNIST (5 + 5
epochs, every stage, baselines, evaluation, MLflow) against the same training in bare Keras
(benchmarks/same_work_keras.py), side by side, round-robin, median of --repeats; then, with
--sweep, the sweep table of benchmarks/sweep.py.

Usage: python benchmarks/overhead.py [--repeats 3] [--sweep]
Every src.train run starts with an empty cache (prepared data, autoencoder, baselines): the
cost of a first run. "warm" rows reuse the cache of the run before (the baselines, PCA and
prepared data of the same dataset; never the autoencoder: sweep.reuse_autoencoder=false).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # also run as a script
from benchmarks._common import (
    MNIST,
    ROOT,
    blas_env,  # noqa: E402
    header,
    load_avg,
    median,
    meta,
    table,
    write_results,
)

EPOCHS = ["pretrain.epochs=5", "classify.epochs=5", "dropout=0.5"]


def timed(cmd: list[str], env: dict, result: Path | None = None) -> tuple[float, float]:
    """Wall time of `cmd` from the repository root, and its test accuracy (from src.train's
    result.json, or the last line the bare script prints)."""
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    text = result.read_text() if result else out.stdout.strip().splitlines()[-1]
    return seconds, json.loads(text)["test_accuracy"]


def train_cmd(run: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "src.train", "experiment=mnist", f"dataset.path={MNIST}",
            *EPOCHS, f"hydra.run.dir={run}", f"paths.cache={cache}",
            "sweep.reuse_autoencoder=false"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="then benchmarks/sweep.py")
    a = parser.parse_args()
    started = meta()
    print(header("Pipeline overhead (MNIST, 5 + 5 epochs, bottleneck 32, dropout 0.5)"))
    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
    bare = [sys.executable, str(ROOT / "benchmarks/same_work_keras.py"), f"--data={MNIST}"]
    names = ["bare Keras, same training", "python -m src.train, first run (empty cache)",
             "python -m src.train, warm (data, baselines reused)"]  # fmt: skip
    times: dict[str, list[float]] = {n: [] for n in names}
    accuracy: dict[str, float] = {}
    loads = []
    for r in range(a.repeats):
        cache = tmp / f"cache-{r}"
        runs = [None, tmp / f"cold-{r}", tmp / f"warm-{r}"]
        cmds = [bare, train_cmd(runs[1], cache), train_cmd(runs[2], cache)]
        for name, cmd, run in zip(names, cmds, runs, strict=True):
            seconds, accuracy[name] = timed(cmd, env, run and run / "result.json")
            times[name].append(seconds)
            loads.append(load_avg())
            print(f"repeat {r + 1} {name}: {seconds:.1f} s", file=sys.stderr)
    ref = median(times[names[0]])
    rows = [[n, f"{median(times[n]):.1f}", f"{median(times[n]) / ref:.2f}",
             f"{accuracy[n]:.4f}"] for n in names]  # fmt: skip
    print(table(["command", "wall (s, median)", "x bare Keras", "test accuracy (last)"], rows))
    print(f"\n{a.repeats} repeats, round-robin; load average after each run: {', '.join(loads)}")
    per_command = {
        n: {"seconds": times[n], "median": median(times[n]), "x_bare": median(times[n]) / ref,
            "test_accuracy": accuracy[n]}
        for n in names
    }  # fmt: skip
    write_results("overhead", {"train_overrides": [*EPOCHS, "sweep.reuse_autoencoder=false"],
                               "repeats": a.repeats, "loads": loads,
                               "blas_env": blas_env(),
                               "commands": per_command}, started)  # fmt: skip
    if a.sweep:
        subprocess.run([sys.executable, str(ROOT / "benchmarks/sweep.py")], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
