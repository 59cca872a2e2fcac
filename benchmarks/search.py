"""Search benchmark: TPE with each pruner (hydra/sweeper/pruner=median, hyperband,
successive_halving; docs/search.md) against the 5 x 4 grid (bottleneck 4, 8, 16, 32, 64 x dropout
0, 0.2, 0.4, 0.6) on digits, default epochs.

For each pruner and sampler seed: how many trials the search needs to come within each of
--tolerances of the reference (the grid's best validation accuracy, or with --no-grid the best
any search here reached), how long that took, its whole wall time and its pruned trials; the
grid's beside (points in its order). Every command gets its own MLflow store, cache and sweep
folder, so nothing (autoencoders, baselines) is shared between runs. The table and every run's
trials go to benchmarks/results/digits_search_grid.json when the reference is the grid's best
(docs/search.md's TPE-against-the-grid table), to digits_search.json with --no-grid (its
pruner table); python -m benchmarks.publish renders both.

Usage: python benchmarks/search.py [--pruners median,hyperband] [--seeds 0,1,2] [--trials 20]
       [--no-grid | --grid-best 0.98] [override ...]
(the grid is 20 points, then each search --trials trials: tens of minutes.)
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
from benchmarks._common import ROOT, header, meta, table, write_results  # noqa: E402

RESULTS = {"grid": "digits_search_grid", "searches": "digits_search"}  # by reference_from
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
    parser.add_argument("--pruners", default="median", help="conf/hydra/sweeper/pruner/ choices")
    parser.add_argument("--seeds", default="0,1,2", help="TPE sampler seeds")
    parser.add_argument("--trials", type=int, default=20, help="trials per search")
    parser.add_argument(
        "--tolerances",
        default="0.005,0.006",
        help="below the reference (0.006: one of digits' 180 validation images)",
    )
    reference = parser.add_mutually_exclusive_group()
    reference.add_argument("--grid-best", type=float, help="skip the grid: its best val accuracy")
    reference.add_argument("--no-grid", action="store_true", help="reference: the searches' best")
    parser.add_argument("--keep", type=Path, help="keep every run's folder (studies, stores) here")
    parser.add_argument("overrides", nargs="*", help="for every command, e.g. pretrain.epochs=20")
    args = parser.parse_args()
    started = meta()
    print(header("Search: TPE with each pruner against the 5 x 4 grid (digits)"))
    runs = []
    with tempfile.TemporaryDirectory() as temporary:
        tmp = args.keep or temporary
        best = args.grid_best
        if best is None and not args.no_grid:
            values, seconds = grid(Path(tmp) / "grid", args.overrides)
            runs.append({"run": "grid 5 x 4 (in its order)", "pruner": "-", "seed": "-",
                         "values": values, "seconds": seconds, "pruned": 0})  # fmt: skip
            best = max(v for v, _ in values if v is not None)
            print(f"grid: best {best:.4f}, {seconds:.0f} s", file=sys.stderr)
        for pruner in args.pruners.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                folder = Path(tmp) / f"{pruner}-tpe{seed}"
                values, seconds, pruned = search(
                    folder, seed, args.trials, [f"hydra/sweeper/pruner={pruner}", *args.overrides]
                )
                runs.append({"run": f"TPE + {pruner}, seed {seed}", "pruner": pruner, "seed": seed,
                             "values": values, "seconds": seconds, "pruned": pruned})  # fmt: skip
                print(f"{pruner} seed {seed}: {values}, {seconds:.0f} s", file=sys.stderr)
    if best is None:  # --no-grid: the best validation accuracy any search reached
        best = max(v for r in runs for v, _ in r["values"] if v is not None)
    tolerances = [float(t) for t in args.tolerances.split(",")]
    for r in runs:
        r["best"] = max(v for v, _ in r["values"] if v is not None)
        r["reached"] = [list(reached(r["values"], best - t)) for t in tolerances]
    source = "searches" if args.no_grid else "grid"
    values = {"reference": best, "reference_from": source, "tolerances": tolerances,
              "trials": args.trials, "overrides": args.overrides, "runs": runs}  # fmt: skip
    write_results(RESULTS[source], values, started)
    columns = ["run", "trials", "pruned", "wall time (s)", "best val accuracy"]
    for t in tolerances:
        columns += [f"trials to >= {best - t:.4f}", f"seconds to >= {best - t:.4f}"]
    rows = [[r["run"], len(r["values"]), r["pruned"], r["seconds"], r["best"],
             *(x for pair in r["reached"] for x in pair)] for r in runs]  # fmt: skip
    print(f"reference validation accuracy {best:.4f}; targets: reference - {args.tolerances}\n")
    print(table(columns, rows))


if __name__ == "__main__":
    main()
