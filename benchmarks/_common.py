"""Shared helpers for the benchmark scripts: machine description, MNIST loading, tables."""

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"  # what the docs publish: python -m benchmarks.publish
MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"
HIDDEN = [128, 64]  # dense AE 784-128-64-32
BOTTLENECK = 32


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, or platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_avg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def command() -> str:
    """The command line this script was started with, from the repository root."""
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


# set on some machines (this one's env notes): they slow numpy's and scikit-learn's BLAS
BLAS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_env() -> dict[str, str | None]:
    """The BLAS variables as this process has them (None: unset), for a results file."""
    return {k: os.environ.get(k) for k in BLAS}


def meta() -> dict:
    """What a results file says about where it came from: command, commit, date, machine, load."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "conf"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return {"command": command(), "commit": commit + ("+changes" if dirty else ""),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{os.cpu_count()} cores, {cpu_model()}",
            "load_at_start": load_avg()}  # fmt: skip


def write_results(name: str, values: dict, started: dict) -> Path:
    """benchmarks/results/<name>.json: `values` and `started` (meta() from the start)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {**started, "load_at_end": load_avg(), **values}
    path.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    print(f"results in {os.path.relpath(path, ROOT)}", file=sys.stderr)
    return path


def update_results(name: str, field: str, key: str, entry: dict, order: list[str]) -> Path:
    """benchmarks/results/<name>.json with `entry` as `key` of its `field` (a dict of entries,
    each measured on its own); the others kept, in `order` (unlisted keys sorted after)."""
    path = RESULTS / f"{name}.json"
    entries = json.loads(path.read_text())[field] if path.is_file() else {}
    entries[key] = entry
    ranked = sorted(entries, key=lambda k: (order.index(k) if k in order else len(order), k))
    return write_results(name, {field: {k: entries[k] for k in ranked}}, {})


def header(title: str) -> str:
    """Markdown heading with the command, date, machine and current load average."""
    cmd = command()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"## {title}\n\n`{cmd}`  \n{now}; {os.cpu_count()} cores, {cpu_model()}; "
        f"load average (1/5/15 min) at start {load_avg()}\n"
    )


def table(columns: list[str], rows: list[list]) -> str:
    """Markdown table; floats get 3 significant decimals."""

    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def train_sweep(args: list[str], tmp: Path) -> tuple[float, list[str]]:
    """Wall time and console lines (stdout, then stderr) of `python -m src.train ARGS -m` run
    from the repository root with its own MLflow store, cache and sweep folder (tmp/multirun)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
    cmd = [sys.executable, "-m", "src.train", f"paths.cache={tmp}/cache",
           f"hydra.sweep.dir={tmp}/multirun", *args, "-m"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, (done.stdout + done.stderr).splitlines()


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def load_mnist(path: Path = MNIST, n_val: int = 5000) -> dict[str, np.ndarray]:
    """MNIST from the shared .npz, scaled to [0, 1] as (n, 28, 28, 1) float32; val from train."""
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (expected ../shared/data/mnist.npz)")
    with np.load(path) as f:
        x_train, y_train = f["x_train"], f["y_train"]
        x_test, y_test = f["x_test"], f["y_test"]

    def scale(x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32) / 255.0)[..., None]

    return {
        "x_train": scale(x_train[n_val:]),
        "y_train": y_train[n_val:].astype(np.int64),
        "x_val": scale(x_train[:n_val]),
        "y_val": y_train[:n_val].astype(np.int64),
        "x_test": scale(x_test),
        "y_test": y_test.astype(np.int64),
    }
