"""Sweep benchmark: a 3x3 Hydra sweep with shared work (autoencoders, baselines, PCA, t-SNE
maps) vs the same 9 points as independent runs, and a 2x2 sweep with the joblib launcher
(2 jobs) vs the basic (sequential) launcher. With --against REV: the same sweep on this tree and
on commit REV (a temporary git worktree), alternately, median of --repeats.

Usage: python benchmarks/sweep.py [--bottlenecks 4,8,16] [--dropouts 0.0,0.25,0.5] [override ...]
       python benchmarks/sweep.py --against 4684113 --bottlenecks 8,32 --repeats 2
Each command runs with its own temporary MLflow store, cache and sweep folder; prints a table
and writes benchmarks/results/sweep_shared.json (or sweep_against.json with --against).
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks._common from the repository root
from benchmarks._common import blas_env, meta, write_results  # noqa: E402

TARGET = 0.5  # sweep / independent runs, benchmarks/README.md


def timed(args: list[str], workdir: Path, root: Path = ROOT) -> float:
    """Wall time of `python -m src.train ARGS` with a private store, cache and output folder."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    cmd = [
        sys.executable,
        "-m",
        "src.train",
        f"paths.cache={workdir / 'cache'}",
        f"hydra.sweep.dir={workdir / 'multirun'}",
        f"hydra.run.dir={workdir / 'run'}",
        *args,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def mean_accuracy(workdir: Path) -> float:
    rows = list(csv.DictReader((workdir / "multirun/summary.csv").open()))
    return sum(float(r["test_accuracy"]) for r in rows) / len(rows)


def against(rev: str, grid: list[str], repeats: int) -> None:
    """The same sweep here and on commit `rev`, alternately; medians and their ratio, printed
    and written to benchmarks/results/sweep_against.json."""
    started = meta()
    times: dict[str, list[float]] = {"this tree": [], rev: []}
    accuracy: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), rev], cwd=ROOT,
                       check=True)  # fmt: skip
        try:
            for i in range(repeats):
                for name, root in (("this tree", ROOT), (rev, old)):
                    workdir = Path(tmp) / f"{name.replace(' ', '-')}-{i}"
                    times[name].append(timed([*grid, "-m"], workdir, root))
                    accuracy[name] = mean_accuracy(workdir)
                    print(f"{name}: {times[name][-1]:.1f} s, load {os.getloadavg()[0]:.1f}",
                          file=sys.stderr)  # fmt: skip
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT)
    print(
        f"# sweep against {rev}, {date.today()}, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}; python benchmarks/sweep.py {' '.join(sys.argv[1:])}"
    )
    print("| tree | wall time (s), median | runs | mean test accuracy |\n|---|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.1f} | {', '.join(f'{x:.1f}' for x in t)} "
              f"| {accuracy[name]:.4f} |")  # fmt: skip
    ratio = statistics.median(times["this tree"]) / statistics.median(times[rev])
    print(f"\nthis tree / {rev} = {ratio:.2f}")
    write_results("sweep_against", {"against": rev, "grid": grid, "repeats": repeats,
                                    "seconds": times, "mean_test_accuracy": accuracy,
                                    "ratio": ratio, "blas_env": blas_env()}, started)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bottlenecks", default="4,8,16")
    parser.add_argument("--dropouts", default="0.0,0.25,0.5")
    parser.add_argument("--against", help="a git commit to time the same sweep on")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    a = parser.parse_args()
    grid = [f"bottleneck={a.bottlenecks}", f"dropout={a.dropouts}", *a.overrides]
    if a.against:
        return against(a.against, grid, a.repeats)
    shared(a.bottlenecks, a.dropouts, a.overrides)


def shared(bottlenecks: str, dropouts: str, overrides: list[str]) -> None:
    """The sweep against its points as independent runs, and joblib against sequential; printed
    and written to benchmarks/results/sweep_shared.json."""
    started = meta()
    grid = [f"bottleneck={bottlenecks}", f"dropout={dropouts}", *overrides]
    points = [(b, d) for b in bottlenecks.split(",") for d in dropouts.split(",")]
    alone = ["sweep.reuse_autoencoder=false", "sweep.reuse_baselines=false", *overrides]
    small = ["bottleneck=4,8", "dropout=0.0,0.5", *overrides]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seconds = timed([*grid, "-m"], tmp / "sweep")
        rows.append(row(f"{len(points)}-point sweep, work shared (1 process)", seconds,
                        tmp / "sweep"))  # fmt: skip
        seconds = sum(timed([f"bottleneck={b}", f"dropout={d}", *alone], tmp / f"point-{b}-{d}")
                      for b, d in points)  # fmt: skip
        rows.append(row(f"{len(points)} independent runs (1 process each)", seconds, None))
        seconds = timed([*small, "-m"], tmp / "seq")
        rows.append(row("2x2 sweep, basic launcher (sequential)", seconds, tmp / "seq"))
        joblib = [*small, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "-m"]
        seconds = timed(joblib, tmp / "par")
        rows.append(row("2x2 sweep, joblib launcher, 2 jobs", seconds, tmp / "par"))
    for r in rows:
        accuracy = f"{r['mean_test_accuracy']:.4f}" if r["mean_test_accuracy"] else "-"
        print(f"| {r['setting']} | {r['seconds']:.1f} s | {accuracy} |")
    ratios = {"sweep / independent": rows[0]["seconds"] / rows[1]["seconds"],
              "joblib 2 jobs / sequential": rows[3]["seconds"] / rows[2]["seconds"]}  # fmt: skip
    print("\n".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
    write_results("sweep_shared", {"grid": grid, "target": TARGET, "rows": rows,
                                   "ratios": ratios, "blas_env": blas_env()}, started)  # fmt: skip


def row(setting: str, seconds: float, sweep_dir: Path | None) -> dict:
    accuracy = mean_accuracy(sweep_dir) if sweep_dir else None
    return {"setting": setting, "seconds": seconds, "mean_test_accuracy": accuracy}


if __name__ == "__main__":
    main()
