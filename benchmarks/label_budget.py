"""docs/mnist.md's label budget: `python -m src.train experiment=mnist_label_budget -m` on MNIST,
its label_budget.csv (means, 95 % intervals, paired tests against from scratch) collected into
benchmarks/results/mnist_label_budget.json and its figure copied to docs/label_budget_mnist.png
(then `python -m benchmarks.publish` writes the table and README's bullets from the file).

Usage: python benchmarks/label_budget.py [--mnist ../shared/data/mnist.npz] [override ...]
e.g. `seed=0,1,2,3,4` for five seeds. Runs with its own temporary MLflow store, cache and sweep
folder.
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks._common from the repository root
from benchmarks._common import MNIST, meta, write_results  # noqa: E402

FIGURE = ROOT / "docs" / "label_budget_mnist.png"


def number(value: str) -> float | int | str | None:
    """A label_budget.csv cell as JSON: int, float, the budget 'all', or None for an empty one."""
    if value in ("", "nan"):
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=MNIST)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. seed=0,1,2,3,4")
    a = parser.parse_args()
    started = meta()
    args = ["experiment=mnist_label_budget", *a.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        cmd = [sys.executable, "-m", "src.train", f"dataset.path={a.mnist.resolve()}",
               f"paths.cache={tmp}/cache", f"hydra.sweep.dir={tmp}/multirun", *args,
               "-m"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        sweep = Path(tmp, "multirun")
        with open(sweep / "label_budget.csv", newline="") as f:
            rows = [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        shutil.copyfile(sweep / "label_budget.png", FIGURE)
    command = f"python -m src.train {' '.join(args)} dataset.path=../shared/data/mnist.npz -m"
    write_results("mnist_label_budget", {"sweep": command, "seconds": seconds, "rows": rows},
                  started)  # fmt: skip


if __name__ == "__main__":
    main()
