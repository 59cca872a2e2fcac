"""Evaluation cost on MNIST: the raw-pixel logistic-regression baseline (solver, tol, max_iter,
input dtype, threads) and the t-SNE maps of the codes (max_iter, angle, threads, openTSNE), with
the accuracy next to every time.

Usage: python benchmarks/evaluation.py [--repeats 3] [--only raw,tsne]
Reads the pipeline's prepared MNIST (.cache/prepared/<key>/mnist.npz: 54000 train, 6000 val, 10000
test; prepared from ../shared/data/mnist.npz if missing). Variants run round-robin, each timed
in process (the fit only); the table gives the median. The raw baseline's rows are chosen on val
accuracy, test is shown for reference. The t-SNE rows map 2000 test images' PCA codes (the
subset evaluate draws, seed 42) and score the map by 5-NN accuracy (metrics.knn_accuracy). One
row runs fit_raw_baseline in a child process with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset;
every other row keeps the environment as it is (tests and CI set both). The openTSNE row is
shown only when openTSNE is importable (it is not a project dependency).
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import (
    BLAS,
    MNIST,
    ROOT,
    blas_env,
    header,
    load_avg,
    median,
    meta,
    table,
    write_results,
)

SEED = 42


def load_arrays() -> dict[str, np.ndarray]:
    from src import data

    cached = sorted(glob.glob(str(ROOT / ".cache" / "prepared" / "*" / "mnist.npz")))
    if cached:
        return data.load(cached[0])
    return data.prepare("mnist", None, 0.1, SEED, str(MNIST))


def flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def logistic(threads: int = 1, dtype: type = np.float32, **settings) -> Callable:
    """A raw-pixel fit with these LogisticRegression settings under threadpool_limits(threads)."""

    def fit(x: np.ndarray, y: np.ndarray):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        with threadpool_limits(threads), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=100 stops early
            return LogisticRegression(**settings).fit(flat(x).astype(dtype, copy=False), y)

    return fit


def raw_in_child() -> dict:
    """fit_raw_baseline in a child process with BLAS removed from its environment."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-raw"]
    out = subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_raw() -> None:
    from src import baselines

    a = load_arrays()
    start = time.perf_counter()
    model = baselines.fit_raw_baseline(a["x_train"], a["y_train"])
    seconds = time.perf_counter() - start
    val = float(model.score(flat(a["x_val"]), a["y_val"]))
    test = float(model.score(flat(a["x_test"]), a["y_test"]))
    n_iter = int(model.n_iter_[0])
    print(json.dumps({"seconds": seconds, "val": val, "test": test, "n_iter": n_iter}))


RAW_COLUMNS = ["variant", "solver", "tol", "max_iter", "input", "threads", "n_iter",
               "fit (s, median)", "x before", "val acc", "test acc", "BLAS env"]  # fmt: skip
TSNE_COLUMNS = ["codes, points", "variant", "time (s, median)", "x before", "5-NN acc on map",
                "vs before", "same map every repeat"]  # fmt: skip


def bench_raw(a: dict[str, np.ndarray], repeats: int, loads: list[float]) -> list[dict]:
    """The raw baseline's variants, round-robin; a table printed, a record per row returned
    (the table's cells by column, with the per-repeat seconds)."""
    from src import baselines

    env = "OPENBLAS_* as set" if any(k in os.environ for k in BLAS) else "OPENBLAS_* unset"
    f32, f64 = np.float32, np.float64
    variants = [  # (label, input dtype, threads, fit); the settings are read off the model
        ("before: lbfgs, max_iter=2000", f32, 1, logistic(max_iter=2000)),
        ("lbfgs, max_iter=100 (stops early)", f32, 1, logistic(max_iter=100)),
        ("lbfgs, tol=1e-3", f32, 1, logistic(tol=1e-3, max_iter=2000)),
        ("**after: fit_raw_baseline**", f32, 1, baselines.fit_raw_baseline),
        ("tol=5e-4, float64 input", f64, 1, logistic(tol=5e-4, max_iter=2000, dtype=f64)),
        ("tol=5e-4, 2 threads", f32, 2, logistic(2, tol=5e-4, max_iter=2000)),
        ("newton-cg, tol=1e-3", f32, 1, logistic(solver="newton-cg", tol=1e-3)),
    ]
    x, y = a["x_train"], a["y_train"]
    times: dict[str, list[float]] = {v[0]: [] for v in variants}
    models: dict = {}
    child_label = f"after, child process with {' and '.join(BLAS)} unset"
    child: list[dict] = []
    for _ in range(repeats):
        for label, _, _, fit in variants:
            start = time.perf_counter()
            models[label] = fit(x, y)
            times[label].append(time.perf_counter() - start)
            loads.append(os.getloadavg()[0])
        child.append(raw_in_child())
        loads.append(os.getloadavg()[0])
    before = median(times[variants[0][0]])
    rows = []
    for label, dtype, threads, _ in variants:
        m, t = models[label], median(times[label])
        val = m.score(flat(a["x_val"]), a["y_val"])
        test = m.score(flat(a["x_test"]), a["y_test"])
        p = m.get_params()
        rows.append([label, p["solver"], p["tol"], p["max_iter"], np.dtype(dtype).name, threads,
                     int(m.n_iter_[0]), t, t / before, float(val), float(test), env])  # fmt: skip
    t = median([c["seconds"] for c in child])
    c = child[-1]
    p = models[variants[3][0]].get_params()  # the child ran the same fit_raw_baseline
    rows.append([child_label, p["solver"], p["tol"], p["max_iter"], "float32", 1, c["n_iter"],
                 t, t / before, c["val"], c["test"], "OPENBLAS_* unset"])  # fmt: skip
    print("### Raw-pixel baseline: LogisticRegression (multinomial, L2, C=1) on 54000 x 784\n")
    print(table(RAW_COLUMNS, rows) + "\n")
    seconds = [*(times[v[0]] for v in variants), [x["seconds"] for x in child]]
    return [{**dict(zip(RAW_COLUMNS, row, strict=True)), "seconds": ts}
            for row, ts in zip(rows, seconds, strict=True)]  # fmt: skip


def sklearn_tsne(threads: int = 1, **settings) -> Callable:
    """metrics.tsne_map's TSNE with these settings under threadpool_limits(threads)."""

    def run(codes: np.ndarray) -> np.ndarray:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = min(30.0, (len(codes) - 1) / 3)
        tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=SEED, **settings)
        with threadpool_limits(threads):
            return tsne.fit_transform(codes.astype(np.float64))

    return run


def open_tsne(codes: np.ndarray) -> np.ndarray:
    """openTSNE with its defaults (250 + 500 iterations, BH below 10000 points), 1 thread."""
    from openTSNE import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = min(30.0, (len(codes) - 1) / 3)
    tsne = TSNE(2, perplexity=perplexity, initialization="pca", random_state=SEED, n_jobs=1)
    with threadpool_limits(1):
        return np.asarray(tsne.fit(codes.astype(np.float64)))


def bench_tsne(a: dict[str, np.ndarray], repeats: int, loads: list[float]) -> list[dict]:
    """The t-SNE variants, round-robin; a table printed, a record per row returned (the
    table's cells by column, with the per-repeat seconds)."""
    from src import baselines, metrics

    subset = metrics.tsne_subset(len(a["y_test"]), 2000, SEED)
    y = a["y_test"][subset]
    codes = {}
    for k in (32, 8, 2):
        pca = baselines.fit_pca(a["x_train"], k)
        codes[k] = baselines.pca_codes(pca, a["x_test"][subset])
    before = sklearn_tsne(max_iter=1000)
    after = lambda c: metrics.tsne_map(c, SEED)  # noqa: E731
    cases: list[tuple[str, str, Callable, np.ndarray, np.ndarray]] = []
    for k in (32, 8, 2):
        name = f"PCA {k}-D, 2000"
        cases += [
            (name, "before: max_iter=1000, angle=0.5, 1 thread", before, codes[k], y),
            (name, "max_iter=500", sklearn_tsne(max_iter=500), codes[k], y),
            (name, "**after: tsne_map** (max_iter=500, angle=0.8)", after, codes[k], y),
        ]
        if k == 32:
            cases += [
                (name, "angle=0.8", sklearn_tsne(angle=0.8), codes[k], y),
                (name, "before, 2 threads", sklearn_tsne(2, max_iter=1000), codes[k], y),
            ]
            try:
                import openTSNE  # noqa: F401

                cases.append((name, "openTSNE 1 thread (defaults)", open_tsne, codes[k], y))
            except ImportError:
                pass
    small = metrics.tsne_subset(len(a["y_test"]), 360, SEED)
    c360 = baselines.pca_codes(baselines.fit_pca(a["x_train"], 32), a["x_test"][small])
    y360 = a["y_test"][small]
    cases += [
        ("PCA 32-D, 360", "before, 1 thread", before, c360, y360),
        ("PCA 32-D, 360", "before, 2 threads", sklearn_tsne(2, max_iter=1000), c360, y360),
        ("PCA 32-D, 360", "**after: tsne_map**", after, c360, y360),
    ]
    times: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    maps: dict[int, list[np.ndarray]] = {i: [] for i in range(len(cases))}
    for _ in range(repeats):
        for i, (_, _, run, c, _) in enumerate(cases):
            start = time.perf_counter()
            maps[i].append(run(c))
            times[i].append(time.perf_counter() - start)
            loads.append(os.getloadavg()[0])
    rows, ref, diffs = [], {}, []
    for i, (name, label, _, _, yy) in enumerate(cases):
        t = median(times[i])
        knn = metrics.knn_accuracy(maps[i][-1], yy, 5, SEED)
        ref.setdefault(name, (t, knn))  # each group's first row is its "before"
        same = all(np.array_equal(m, maps[i][0]) for m in maps[i]) if repeats > 1 else None
        t0, k0 = ref[name]
        same_cell = {True: "yes", False: "no", None: "-"}[same]
        diffs.append(float(knn - k0))
        rows.append([name, label, t, t / t0, float(knn), f"{knn - k0:+.4f}", same_cell])
    print("### t-SNE maps: scikit-learn TSNE (Barnes-Hut) on test codes, k-NN on the map\n")
    print(table(TSNE_COLUMNS, rows) + "\n")
    return [{**dict(zip(TSNE_COLUMNS, row, strict=True)), "vs before": diffs[i],
             "seconds": times[i]} for i, row in enumerate(rows)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="raw,tsne", help="comma-separated: raw, tsne")
    parser.add_argument("--child-raw", action="store_true", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child_raw:
        return child_raw()
    import sklearn

    started = meta()
    print(header("Evaluation cost: raw-pixel baseline and t-SNE maps"))
    env = ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in BLAS)
    print(f"scikit-learn {sklearn.__version__}; {env}; medians of {a.repeats}, round-robin\n")
    arrays = load_arrays()
    loads: list[float] = []
    only = a.only.split(",")
    raw = bench_raw(arrays, a.repeats, loads) if "raw" in only else []
    tsne = bench_tsne(arrays, a.repeats, loads) if "tsne" in only else []
    if loads:
        print(f"1-min load average during the runs {min(loads):.2f}–{max(loads):.2f}; "
              f"at the end {load_avg()}")  # fmt: skip
    write_results("evaluation", {"repeats": a.repeats, "sklearn": sklearn.__version__,
                                 "blas_env": blas_env(),
                                 "loads": loads, "raw": raw, "tsne": tsne}, started)  # fmt: skip


if __name__ == "__main__":
    main()
