"""Search benchmark: TPE with median pruning (hydra/sweeper=optuna, docs/search.md) against the
5 x 4 grid (bottleneck 4, 8, 16, 32, 64 x dropout 0, 0.2, 0.4, 0.6) on digits, default epochs.

For each sampler seed: how many trials the search needs to come within each of --tolerances
of the grid's best validation accuracy, how long that took, and its whole wall time; the grid's
beside (points in its order, and wall time). Every command gets its own MLflow store, cache
and sweep folder, so nothing (autoencoders, baselines) is shared between the grid and the
searches.

Usage: python benchmarks/search.py [--seeds 0,1,2] [--trials 20] [--grid-best 0.98] [override ...]
(--grid-best skips the grid: about 20 grid points, then 20 trials per seed; tens of minutes.)
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import ROOT, header, table  # noqa: E402

GRID = ["bottleneck=4,8,16,32,64", "dropout=0.0,0.2,0.4,0.6"]


def timed(args: list[str], workdir: Path) -> float:
    """Wall time of `python -m src.train ARGS -m` with a private store, cache and sweep folder."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    cmd = [sys.executable, "-m", "src.train", f"paths.cache={workdir / 'cache'}",
           f"hydra.sweep.dir={workdir / 'multirun'}", *args, "-m"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def reached(
    values: list[tuple[float | None, float]], target: float
) -> tuple[str | int, str | float]:
    """(1-based index of the first of (value, seconds since start) at or above target, its
    seconds), or ("not reached", "")."""
    for i, (value, seconds) in enumerate(values, 1):
        if value is not None and value >= target:
            return i, seconds
    return "not reached", ""


def grid(workdir: Path, overrides: list[str]) -> tuple[list, float]:
    """(validation accuracy per point in the grid's order, without times; wall time)."""
    seconds = timed([*GRID, *overrides], workdir)
    rows = list(csv.DictReader((workdir / "multirun/summary.csv").open()))  # in job order
    return [(float(r["val_accuracy"]) if r["val_accuracy"] else None, "") for r in rows], seconds


def search(workdir: Path, seed: int, trials: int, overrides: list[str]) -> tuple[list, float, int]:
    """(validation accuracy and seconds since the start per trial, wall time, pruned trials)."""
    import optuna

    storage = f"sqlite:///{workdir / 'optuna.db'}"
    seconds = timed(["hydra/sweeper=optuna", f"hydra.sweeper.n_trials={trials}",
                     f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweeper.storage={storage}",
                     "hydra.sweeper.study_name=benchmark", *overrides], workdir)  # fmt: skip
    done = sorted(optuna.load_study(study_name="benchmark", storage=storage).trials,
                  key=lambda t: t.number)  # fmt: skip
    start = min(t.datetime_start for t in done)
    values = [(t.value if t.state.name == "COMPLETE" else None,
               (t.datetime_complete - start).total_seconds()) for t in done]  # fmt: skip
    return values, seconds, sum(t.state.name == "PRUNED" for t in done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="TPE sampler seeds")
    parser.add_argument("--trials", type=int, default=20, help="trials per search")
    parser.add_argument(
        "--tolerances",
        default="0.005,0.006",
        help="below the grid's best (0.006: one of digits' 180 validation images)",
    )
    parser.add_argument("--grid-best", type=float, help="skip the grid: its best val accuracy")
    parser.add_argument("--keep", type=Path, help="keep every run's folder (studies, stores) here")
    parser.add_argument("overrides", nargs="*", help="for every command, e.g. pretrain.epochs=20")
    args = parser.parse_args()
    print(header("Search: TPE with pruning against the 5 x 4 grid (digits)"))
    runs = []
    with tempfile.TemporaryDirectory() as temporary:
        tmp = args.keep or temporary
        if args.grid_best is None:
            values, seconds = grid(Path(tmp) / "grid", args.overrides)
            runs.append(("grid 5 x 4 (in its order)", values, seconds, 0))
            best = max(v for v, _ in values if v is not None)
            print(f"grid: best {best:.4f}, {seconds:.0f} s", file=sys.stderr)
        else:
            best = args.grid_best
        for seed in (int(s) for s in args.seeds.split(",")):
            values, seconds, pruned = search(Path(tmp) / f"tpe{seed}", seed, args.trials,
                                             args.overrides)  # fmt: skip
            runs.append((f"TPE + pruner, seed {seed}", values, seconds, pruned))
            print(f"seed {seed}: {values}, {seconds:.0f} s", file=sys.stderr)
    tolerances = [float(t) for t in args.tolerances.split(",")]
    columns = ["run", "trials", "pruned", "wall time (s)", "best val accuracy"]
    for t in tolerances:
        columns += [f"trials to >= {best - t:.4f}", f"seconds to >= {best - t:.4f}"]
    rows = []
    for name, values, seconds, pruned in runs:
        row = [name, len(values), pruned, seconds, max(v for v, _ in values if v is not None)]
        for t in tolerances:
            row += reached(values, best - t)
        rows.append(row)
    print(f"grid best validation accuracy {best:.4f}; targets: best - {args.tolerances}\n")
    print(table(columns, rows))


if __name__ == "__main__":
    main()
