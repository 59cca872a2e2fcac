"""Example sweeps of docs/sweeps.md, run as a user runs them, their console kept:
`python -m src.train ARGS -m` on digits with its own MLflow store, cache and sweep folder; the
console, wall time and summary go to benchmarks/results/console_NAME.json (then
`python -m benchmarks.publish` writes the examples from it).

Usage: python benchmarks/console.py seeds    # bottleneck=8,32 dropout=0.0,0.5 seed=0,1,2
       python benchmarks/console.py budget   # the label budget on digits, 18 points
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks._common from the repository root
from benchmarks._common import meta, train_sweep, write_results  # noqa: E402

SWEEPS = {  # docs/sweeps.md's examples
    "seeds": ["bottleneck=8,32", "dropout=0.0,0.5", "seed=0,1,2"],
    "budget": [
        "classify.labels_per_class=1,10,null",
        "classify.finetune=false,true",
        "seed=0,1,2",
    ],  # fmt: skip
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=SWEEPS)
    name = parser.parse_args().name
    started = meta()
    with tempfile.TemporaryDirectory() as tmp:
        seconds, console = train_sweep(SWEEPS[name], Path(tmp))
        runs = len(list(Path(tmp, "multirun").glob("*/result.json")))
    values = {"sweep": f"python -m src.train {' '.join(SWEEPS[name])} -m", "seconds": seconds,
              "runs": runs, "console": console}  # fmt: skip
    write_results(f"console_{name}", values, started)


if __name__ == "__main__":
    main()
