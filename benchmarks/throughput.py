"""Training throughput: dense autoencoder epoch time on MNIST, the tutorial's way vs the project's
and tuned settings, against this CPU's tf.matmul peak; with validation loss next to each time.

Usage: python benchmarks/throughput.py [--epochs 5] [--repeats 3] [--n-train 55000]
Variants run round-robin (repeat 1 of every variant, then repeat 2, ...) so that load changes
hit them alike; epoch time is the median over repeats of the median epoch after the first
(the first epoch pays tracing/XLA compilation, reported separately).
"""

import argparse
import contextlib
import io
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from benchmarks._common import (
    BOTTLENECK,
    HIDDEN,
    blas_env,
    header,
    load_avg,
    load_mnist,
    median,
    meta,
    table,
    write_results,
)


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """fp32 GFLOP/s of tf.matmul on n x n matrices (best of `reps`)."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def epoch_flops(n_train: int, n_val: int, n_pixels: int = 784) -> float:
    """Training FLOPs of one epoch: 6 x weights x train samples + 2 x weights x val samples."""
    sizes = [n_pixels, *HIDDEN, BOTTLENECK, *reversed(HIDDEN), n_pixels]
    weights = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    return 6 * weights * n_train + 2 * weights * n_val


class EpochTimer:
    """Keras callback recording each epoch's wall time (training + validation)."""

    def __init__(self) -> None:
        import keras

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch: int, logs: dict | None = None) -> None:
                cb.start = time.perf_counter()

            def on_epoch_end(cb, epoch: int, logs: dict | None = None) -> None:
                self.times.append(time.perf_counter() - cb.start)

        self.times: list[float] = []
        self.callback = _Timer()


def run_variant(v: dict, arrays: dict, epochs: int) -> dict:
    """Train one variant from scratch; return epoch times, jit actually used and val loss."""
    import keras

    from src import models, training

    timer = EpochTimer()
    x, xv = arrays["x_train"], arrays["x_val"]
    sink = io.StringIO() if v["verbose"] == 1 else sys.stderr
    with contextlib.redirect_stdout(sink):
        if v["kind"] == "project":  # the project's own code path, unchanged
            model = {"name": "dense", "hidden": HIDDEN, "activation": "relu"}
            ae, _, hist = training.fit_autoencoder(
                x, xv, model=model, bottleneck=BOTTLENECK, epochs=epochs, batch_size=v["batch"],
                learning_rate=v["lr"], loss="mse", seed=42, callbacks=[timer.callback],
            )  # fmt: skip
        else:
            keras.utils.set_random_seed(42)
            ae, _ = models.build_autoencoder(x.shape[1:], BOTTLENECK, HIDDEN, "relu")
            ae.compile(optimizer=keras.optimizers.Adam(v["lr"]), loss="mse", jit_compile=v["jit"],
                       steps_per_execution=v["spe"])  # fmt: skip
            hist = ae.fit(
                x, x, validation_data=(xv, xv), epochs=epochs, batch_size=v["batch"],
                shuffle=True, verbose=v["verbose"], callbacks=[timer.callback],
            ).history  # fmt: skip
    jit = ae.jit_compile
    keras.backend.clear_session()
    return {"times": timer.times, "jit": jit, "val_losses": hist["val_loss"]}


def time_to_loss(res: dict, target: float) -> float:
    """Training seconds (first epoch included) until val loss <= target; inf if never."""
    for k, loss in enumerate(res["val_losses"]):
        if loss <= target:
            return sum(res["times"][: k + 1])
    return float("inf")


def summarize(
    variants: list[dict], results: dict[str, list[dict]], ref: str, flops: float
) -> dict[str, dict]:
    """Per variant: its settings, runs and the medians (epoch 1, later epochs, val loss, seconds
    to the reference's final val loss) with their ratios to the reference variant `ref`."""
    base = median([median(x["times"][1:]) for x in results[ref]])
    target = median([x["val_losses"][-1] for x in results[ref]])
    ref_reach = median([time_to_loss(x, target) for x in results[ref]])
    summary = {}
    for v in variants:
        rs = results[v["name"]]
        t = median([median(x["times"][1:]) for x in rs])
        reach = median([time_to_loss(x, target) for x in rs])
        summary[v["name"]] = {
            "jit_compile_used": bool(rs[0]["jit"]), "batch": v["batch"], "lr": v["lr"],
            "steps_per_execution": v["spe"], "runs": rs,
            "epoch_1": median([x["times"][0] for x in rs]), "later_epochs": t,
            "x_ref": t / base, "gflops": flops / t / 1e9,
            "val_loss": median([x["val_losses"][-1] for x in rs]),
            "seconds_to_ref_loss": reach, "x_ref_to_loss": reach / ref_reach,
        }  # fmt: skip
    return summary


VARIANTS = [
    # name, kind, jit_compile, batch, lr, verbose, steps_per_execution (None: the project's own,
    # src.training.STEPS_PER_EXECUTION with one tf.data pipeline)
    ("tutorial: plain fit, batch 256, jit off, progress bar", "plain", False, 256, 1e-3, 1, 1),
    ("tutorial: plain fit, batch 256, jit off, verbose=2", "plain", False, 256, 1e-3, 2, 1),
    ("project fit_autoencoder as is, batch 64 (config)", "project", None, 64, 2e-3, 2, None),
    ("project fit_autoencoder as is, batch 256", "project", None, 256, 2e-3, 2, None),
    ("jit_compile=True, batch 256, lr 2e-3", "plain", True, 256, 2e-3, 2, 1),
    ("jit_compile=True, batch 512, lr 2e-3", "plain", True, 512, 2e-3, 2, 1),
    ("steps_per_execution=16, batch 256, lr 2e-3", "plain", False, 256, 2e-3, 2, 16),
    ("jit + steps_per_execution=16, batch 256, lr 2e-3", "plain", True, 256, 2e-3, 2, 16),
    ("jit + steps_per_execution=16, batch 1024, lr 4e-3", "plain", True, 1024, 4e-3, 2, 16),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=55000, help="MNIST training images")
    parser.add_argument("--only", help="comma-separated variant numbers (1-based) to run")
    a = parser.parse_args()
    started = meta()
    print(header("Training throughput (dense AE 784-128-64-32, MNIST)"))
    arrays = load_mnist()
    arrays["x_train"] = arrays["x_train"][: a.n_train]
    keys = ("name", "kind", "jit", "batch", "lr", "verbose", "spe")
    variants = [dict(zip(keys, v, strict=True)) for v in VARIANTS]
    if a.only:
        variants = [variants[int(i) - 1] for i in a.only.split(",")]
    peak = matmul_peak()
    results: dict[str, list[dict]] = {v["name"]: [] for v in variants}
    loads = []
    for r in range(a.repeats):
        for v in variants:
            res = run_variant(v, arrays, a.epochs)
            results[v["name"]].append(res)
            loads.append(load_avg())
            print(f"repeat {r + 1} {v['name']}: {res['times']}", file=sys.stderr)
    peak = max(peak, matmul_peak())
    flops = epoch_flops(len(arrays["x_train"]), len(arrays["x_val"]))
    ref = VARIANTS[1][0] if VARIANTS[1][0] in results else variants[0]["name"]
    target = median([x["val_losses"][-1] for x in results[ref]])
    summary = summarize(variants, results, ref, flops)
    rows = [[name, str(x["jit_compile_used"]), f"{x['epoch_1']:.2f}", f"{x['later_epochs']:.2f}",
             f"{x['x_ref']:.2f}", f"{x['gflops']:.0f} ({x['gflops'] / peak:.0%})",
             f"{x['val_loss']:.5f}", f"{x['seconds_to_ref_loss']:.1f}",
             f"{x['x_ref_to_loss']:.2f}"] for name, x in summary.items()]  # fmt: skip
    columns = [
        "variant", "jit_compile used", "epoch 1 (s)", "later epochs (s, median)", "x ref",
        "GFLOP/s (of peak)", f"val loss after {a.epochs}",
        f"s to ref's final val loss {target:.5f}", "x ref",
    ]  # fmt: skip
    print(table(columns, rows))
    print(
        f"\n{len(arrays['x_train'])} training + {len(arrays['x_val'])} validation images; "
        f"{flops / 1e9:.0f} GFLOP per epoch; tf.matmul fp32 peak {peak:.0f} GFLOP/s "
        f"(2048x2048); {a.repeats} repeats x {a.epochs} epochs; load average after each run: "
        f"{', '.join(loads)}\n"
    )
    print(
        f"Reference: {ref}. Target: best epoch time <= 0.5 x the tutorial's at equal or "
        "better val loss. "
        f"numpy {np.__version__}."
    )
    write_results("throughput", {
        "epochs": a.epochs, "repeats": a.repeats, "n_train": len(arrays["x_train"]),
        "n_val": len(arrays["x_val"]), "gflop_per_epoch": flops / 1e9, "peak_gflops": peak,
        "reference": ref, "ref_val_loss": target, "loads": loads,
        "blas_env": blas_env(), "variants": summary,
    }, started)  # fmt: skip


if __name__ == "__main__":
    main()
