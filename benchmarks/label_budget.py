"""docs/mnist.md's label budget: `python -m src.train experiment=mnist_label_budget -m` on MNIST,
its label_budget.csv (means, 95 % intervals, paired tests against from scratch) collected into
benchmarks/results/mnist_label_budget.json and its figure copied to docs/label_budget_mnist.png
(then `python -m benchmarks.publish` writes the table and README's bullets from the file).

Usage: python benchmarks/label_budget.py [--mnist ../shared/data/mnist.npz] [override ...]
e.g. `seed=0,1,2,3,4` for five seeds. Runs with its own temporary MLflow store, cache and sweep
folder.

With --ladder EPOCHS it runs the Ladder network's sweep instead (experiment=mnist_ladder at 10 and
100 labels per class, seeds 0 1 2, model.epochs=EPOCHS) and adds its rows to the results file as
the method LADDER: the same seeds draw the same labels as the main sweep's, and its `vs_scratch_`
columns compare it with its own network (784-1000-500-250-250-250-10) trained from scratch on the
same labels. The figure is redrawn with it; the main sweep's rows stay as they were measured
(a new main sweep drops the Ladder's rows: run --ladder again after it).
"""

import argparse
import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks._common from the repository root
from benchmarks._common import MNIST, meta, train_sweep, write_results  # noqa: E402

FIGURE = ROOT / "docs" / "label_budget_mnist.png"
RESULTS = ROOT / "benchmarks" / "results" / "mnist_label_budget.json"
LADDER = "Ladder network, joint"
LADDER_GRID = ["classify.labels_per_class=10,100", "seed=0,1,2"]


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


def sweep(mnist: Path, args: list[str], figure: Path | None) -> tuple[float, list[dict]]:
    """Wall time and label_budget.csv rows of the sweep `python -m src.train ARGS -m` on MNIST
    (benchmarks._common.train_sweep); its label_budget.png copied to `figure` if given."""
    with tempfile.TemporaryDirectory() as tmp:
        seconds, _ = train_sweep([f"dataset.path={mnist.resolve()}", *args], Path(tmp))
        sweep = Path(tmp, "multirun")
        with open(sweep / "label_budget.csv", newline="") as f:
            rows = [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        if figure is not None:
            shutil.copyfile(sweep / "label_budget.png", figure)
    return seconds, rows


def with_ladder(results: dict, rows: list[dict], ladder: dict, figure: Path = FIGURE) -> dict:
    """The results with the Ladder's own rows (its classifier, "autoencoder, frozen" in its
    sweep) as the method LADDER, replacing any earlier ones; the figure redrawn with them."""
    from src import plots

    own = [{**row, "method": LADDER} for row in rows if row["method"] == "autoencoder, frozen"]
    merged = [row for row in results["rows"] if row["method"] != LADDER] + own
    plots.label_budget(merged, figure)
    return {**results, "rows": merged, "ladder": ladder}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=MNIST)
    parser.add_argument("--ladder", type=int, metavar="EPOCHS", help="add the Ladder's rows")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. seed=0,1,2,3,4")
    a = parser.parse_args()
    started = meta()
    if a.ladder:
        args = ["experiment=mnist_ladder", *LADDER_GRID, f"model.epochs={a.ladder}", *a.overrides]
        seconds, rows = sweep(a.mnist, args, None)  # with_ladder draws the figure
        command = f"python -m src.train {' '.join(args)} dataset.path=../shared/data/mnist.npz -m"
        results = json.loads(RESULTS.read_text())
        ladder = {**started, "sweep": command, "seconds": seconds, "epochs": a.ladder}
        record = {k: v for k, v in with_ladder(results, rows, ladder).items()
                  if k not in started or k == "load_at_end"}  # fmt: skip
        write_results("mnist_label_budget", record, {k: results[k] for k in started})
        return
    args = ["experiment=mnist_label_budget", *a.overrides]
    seconds, rows = sweep(a.mnist, args, FIGURE)
    command = f"python -m src.train {' '.join(args)} dataset.path=../shared/data/mnist.npz -m"
    write_results("mnist_label_budget", {"sweep": command, "seconds": seconds, "rows": rows},
                  started)  # fmt: skip


if __name__ == "__main__":
    main()
