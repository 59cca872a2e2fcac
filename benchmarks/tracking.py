"""Tracking overhead: the same training with MLflow on and off, in process on MNIST (the project's
pretrain stage code: fit + save + per-epoch metrics + 2 logged models) and as the whole
`python -m src.train` CLI on digits (every stage, 4 logged models).

Usage: python benchmarks/tracking.py [--epochs 10] [--repeats 3] [--cli-epochs 30] [--no-cli]
On and off runs alternate so that load changes hit both alike; each uses a fresh output folder
and, for the CLI, a fresh cache (nothing reused); the MLflow store is created once beforehand.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import ROOT, header, load_avg, load_mnist, median, table


def compose(overrides: list[str]):
    """The project's config (conf/config.yaml) with overrides, as src.train would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def in_process(arrays: dict, cfg, out: Path) -> tuple[float, float, float]:
    """Wall time of the pretrain stage's run() (inside a run when enabled), log_model seconds,
    and the final val loss."""
    import keras

    from src import models, pretrain, tracking

    logged = [0.0]
    original = tracking.log_model

    def timed_log_model(*args, **kwargs) -> None:
        start = time.perf_counter()
        original(*args, **kwargs)
        logged[0] += time.perf_counter() - start

    tracking.log_model = timed_log_model
    keras.backend.clear_session()
    start = time.perf_counter()
    try:  # Keras' and MLflow's progress output goes to stderr, the table to stdout
        with contextlib.redirect_stdout(sys.stderr):
            with tracking.start_run(cfg, "tracking-benchmark", {"epochs": cfg.pretrain.epochs}):
                pretrain.run(cfg, arrays, out)
    finally:
        tracking.log_model = original
    seconds = time.perf_counter() - start
    autoencoder = models.load(out / cfg.paths.autoencoder)
    val_loss = float(autoencoder.evaluate(arrays["x_val"], arrays["x_val"], verbose=0))
    return seconds, logged[0], val_loss


def cli(workdir: Path, enabled: bool, epochs: int, store: str) -> tuple[float, float]:
    """Wall time and test accuracy of one `python -m src.train` on digits."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    cmd = [
        sys.executable, "-m", "src.train", f"mlflow.enabled={str(enabled).lower()}",
        f"pretrain.epochs={epochs}", f"classify.epochs={epochs}", "sweep.reuse_autoencoder=false",
        f"paths.cache={workdir / 'cache'}", f"hydra.run.dir={workdir / 'run'}",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    import json

    return seconds, json.loads((workdir / "run" / "result.json").read_text())["test_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="MNIST autoencoder epochs")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cli-epochs", type=int, default=30, help="digits epochs per stage")
    parser.add_argument("--no-cli", action="store_true", help="skip the src.train CLI part")
    a = parser.parse_args()
    print(header("Tracking overhead (MLflow on vs off)"))
    import mlflow

    tmp = Path(tempfile.mkdtemp(prefix="tracking-bench-"))
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store
    start = time.perf_counter()
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("ae-classify")
    create = time.perf_counter() - start

    arrays = load_mnist()
    overrides = [f"pretrain.epochs={a.epochs}", f"pretrain.batch_size={a.batch_size}"]
    res: dict[bool, list[tuple]] = {True: [], False: []}
    loads = []
    in_process(arrays, compose(["pretrain.epochs=1", "mlflow.enabled=false"]), tmp / "warm-up")
    for r in range(a.repeats):
        for enabled in (False, True):
            cfg = compose([*overrides, f"mlflow.enabled={str(enabled).lower()}"])
            res[enabled].append(in_process(arrays, cfg, tmp / f"out-{r}-{enabled}"))
            loads.append(load_avg())
            print(f"in-process enabled={enabled}: {res[enabled][-1]}", file=sys.stderr)
    off = median([x[0] for x in res[False]])
    on = median([x[0] for x in res[True]])
    logm = median([x[1] for x in res[True]])
    rows = [
        [f"pretrain stage, MNIST {a.epochs} epochs, mlflow off", f"{off:.2f}", "-", "-",
         f"{median([x[2] for x in res[False]]):.5f}"],
        [f"pretrain stage, MNIST {a.epochs} epochs, mlflow on", f"{on:.2f}",
         f"{on - off:+.2f} ({(on - off) / off:+.1%})", f"{logm:.2f}",
         f"{median([x[2] for x in res[True]]):.5f}"],
    ]  # fmt: skip
    if not a.no_cli:
        cres: dict[bool, list[tuple]] = {True: [], False: []}
        for r in range(a.repeats):
            for enabled in (False, True):
                cres[enabled].append(cli(tmp / f"cli-{r}-{enabled}", enabled, a.cli_epochs, store))
                loads.append(load_avg())
                print(f"cli enabled={enabled}: {cres[enabled][-1]}", file=sys.stderr)
        coff = median([x[0] for x in cres[False]])
        con = median([x[0] for x in cres[True]])
        rows += [
            [f"python -m src.train, digits, {a.cli_epochs}+{a.cli_epochs} epochs, mlflow off",
             f"{coff:.2f}", "-", "-", f"acc {median([x[1] for x in cres[False]]):.4f}"],
            [f"python -m src.train, digits, {a.cli_epochs}+{a.cli_epochs} epochs, mlflow on",
             f"{con:.2f}", f"{con - coff:+.2f} ({(con - coff) / coff:+.1%})", "-",
             f"acc {median([x[1] for x in cres[True]]):.4f}"],
        ]  # fmt: skip
    columns = ["run", "wall (s, median)", "tracking overhead", "of which log_model (s)",
               "val loss / test accuracy"]  # fmt: skip
    print(table(columns, rows))
    print(
        f"\n{a.repeats} repeats, on/off alternating; batch {a.batch_size}; creating the SQLite "
        f"store (once, not in the figures): {create:.2f} s; load average after each run: "
        f"{', '.join(loads)}\nTarget: overhead <= 3 % of training time."
    )


if __name__ == "__main__":
    main()
