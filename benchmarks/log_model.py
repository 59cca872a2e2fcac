"""Where src.tracking.log_model's time goes, per model: signature inference via predict() or a
direct call, and mlflow.tensorflow.log_model with and without an input example.

Usage: python benchmarks/log_model.py [--repeats 3]
Runs in a temporary MLflow store; the MNIST-sized dense autoencoder (784-128-64-32).
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import (
    BOTTLENECK,
    HIDDEN,
    header,
    load_avg,
    median,
    meta,
    table,
    write_results,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    started = meta()
    print(header("log_model cost per model"))
    import keras
    import mlflow
    import tensorflow as tf
    from mlflow.models import infer_signature

    from src import models

    tmp = tempfile.mkdtemp(prefix="log-model-bench-")
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.set_experiment("log-model-bench")
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    reqs = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
    steps: dict[str, list[float]] = {}

    @contextmanager
    def clock(name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        steps.setdefault(name, []).append(time.perf_counter() - start)

    with mlflow.start_run():
        first: dict[str, list[float]] = {}
        for r in range(a.repeats + 1):
            ae, _ = models.build_autoencoder((28, 28, 1), BOTTLENECK, HIDDEN, "relu")
            ae.compile(optimizer="adam", loss="mse")
            with clock("signature output via model.predict (fresh model)"):
                y = ae.predict(x, verbose=0)
            ae2, _ = models.build_autoencoder((28, 28, 1), BOTTLENECK, HIDDEN, "relu")
            with clock("signature output via direct call (fresh model)"):
                keras.ops.convert_to_numpy(ae2(x, training=False))
            sig = infer_signature(x, y)
            with clock("log_model, signature + input example (as src.tracking)"):
                mlflow.tensorflow.log_model(
                    ae, name=f"a{r}", signature=sig, input_example=x, pip_requirements=reqs
                )
            with clock("log_model, signature, no input example"):
                mlflow.tensorflow.log_model(ae, name=f"b{r}", signature=sig, pip_requirements=reqs)
            if r == 0:  # the first calls in a process pay imports and tracing: shown apart
                first.update({f"{k}, first call in the process": v for k, v in steps.items()})
                steps.clear()
    rows = [[name, f"{median(ts):.3f}"] for name, ts in {**first, **steps}.items()]
    print(table(["step", "seconds (median)"], rows))
    print(f"\n{a.repeats} repeats after the first; load average at end {load_avg()}")
    per_step = {
        name: {"seconds": ts, "median": median(ts)} for name, ts in {**first, **steps}.items()
    }
    write_results("log_model", {"repeats": a.repeats, "steps": per_step}, started)


if __name__ == "__main__":
    main()
