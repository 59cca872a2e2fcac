"""Tracking overhead: the same training with MLflow on and off, in process on MNIST (the project's
pretrain stage code: fit + save + per-epoch metrics + 2 logged models) and as the whole
`python -m src.train` CLI on digits (every stage, 3 logged models), there also with
src/tracking.py as it was at --before (default HEAD) against the working tree's.

Usage: python benchmarks/tracking.py [--epochs 10] [--repeats 3] [--cli-epochs 30] [--no-cli]
                                     [--no-in-process] [--before HEAD]
Variants alternate, each repeat starting at the next one, so that load changes hit all alike;
each uses a fresh output folder and, for
the CLI, a fresh cache (nothing reused); the MLflow store is created once beforehand. The CLI runs
in two copies of src/ and conf/ taken at the start, identical but for src/tracking.py.
"""

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import (
    ROOT,
    blas_env,
    header,
    load_avg,
    load_mnist,
    median,
    meta,
    table,
    write_results,
)


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


def snapshot(dest: Path, tracking_source: str | None = None) -> Path:
    """A copy of src/ and conf/ (what `python -m src.train` runs), with another
    src/tracking.py if given."""
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    if tracking_source is not None:
        (dest / "src" / "tracking.py").write_text(tracking_source)
    return dest


def cli(code: Path, workdir: Path, enabled: bool, epochs: int, store: str) -> tuple[float, float]:
    """Wall time and test accuracy of one `python -m src.train` on digits, run from `code`."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "GIT_DIR": str(ROOT / ".git")}
    env.pop("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", None)  # as in a fresh shell
    cmd = [
        sys.executable, "-m", "src.train", f"mlflow.enabled={str(enabled).lower()}",
        f"pretrain.epochs={epochs}", f"classify.epochs={epochs}", "sweep.reuse_autoencoder=false",
        f"paths.cache={workdir / 'cache'}", f"hydra.run.dir={workdir / 'run'}",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, cwd=code, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    import json

    return seconds, json.loads((workdir / "run" / "result.json").read_text())["test_accuracy"]


def in_process_rows(a: argparse.Namespace, tmp: Path, loads: list[str], raw: dict) -> list[list]:
    """The pretrain stage's code in this process on MNIST, mlflow off and on, alternating;
    per repeat (seconds, log_model seconds, val loss) into raw["in_process"]."""
    arrays = load_mnist()
    overrides = [f"pretrain.epochs={a.epochs}", f"pretrain.batch_size={a.batch_size}"]
    res: dict[bool, list[tuple]] = {True: [], False: []}
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
    raw["in_process"] = {"epochs": a.epochs, "batch": a.batch_size, "mlflow off": res[False],
                         "mlflow on": res[True], "off": off, "on": on, "log_model": logm,
                         "overhead": (on - off) / off}  # fmt: skip
    return [
        [f"pretrain stage, MNIST {a.epochs} epochs, mlflow off", f"{off:.2f}", "-", "-",
         f"{median([x[2] for x in res[False]]):.5f}"],
        [f"pretrain stage, MNIST {a.epochs} epochs, mlflow on", f"{on:.2f}",
         f"{on - off:+.2f} ({(on - off) / off:+.1%})", f"{logm:.2f}",
         f"{median([x[2] for x in res[True]]):.5f}"],
    ]  # fmt: skip


def cli_rows(
    a: argparse.Namespace, tmp: Path, store: str, loads: list[str], raw: dict
) -> tuple[list[list], str]:
    """`python -m src.train` on digits: mlflow off, on with src/tracking.py at --before and on
    with the working tree's, alternating; per repeat (seconds, test accuracy) into raw["cli"]."""
    rows = []
    old = subprocess.run(["git", "show", f"{a.before}:src/tracking.py"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    now_code, before_code = snapshot(tmp / "code-now"), snapshot(tmp / "code-before", old)
    variants = {  # name: (code, mlflow enabled)
        "mlflow off": (now_code, False),
        f"mlflow on, src/tracking.py at {a.before} (before)": (before_code, True),
        "mlflow on, src/tracking.py now": (now_code, True),
    }
    cres: dict[str, list[tuple]] = {v: [] for v in variants}
    names = list(variants)
    for r in range(a.repeats):
        for i in range(len(names)):  # each repeat starts at the next variant
            name = names[(r + i) % len(names)]
            code, enabled = variants[name]
            workdir = tmp / f"cli-{r}-{names.index(name)}"
            cres[name].append(cli(code, workdir, enabled, a.cli_epochs, store))
            loads.append(load_avg())
            print(f"cli {name}: {cres[name][-1]}", file=sys.stderr)
    coff = median([x[0] for x in cres["mlflow off"]])
    walls = {name: median([x[0] for x in results]) for name, results in cres.items()}
    for name, results in cres.items():
        extra = walls[name] - coff
        overhead = "-" if not variants[name][1] else f"{extra:+.2f} ({extra / coff:+.1%})"
        rows.append([f"python -m src.train, digits, {a.cli_epochs}+{a.cli_epochs} "
                     f"epochs, {name}", f"{walls[name]:.2f}", overhead, "-",
                     f"acc {median([x[1] for x in results]):.4f}"])  # fmt: skip
    before, now = (walls[name] - coff for name in names[1:])
    ratio = f"{now / before:.2f}" if before > 0 else "n/a"
    paired = median([n[0] - b[0] for b, n in zip(cres[names[1]], cres[names[2]], strict=True)])
    summary = (
        f"\nsrc.train tracking overhead now / before: {ratio} ({now - before:+.2f} s); "
        f"median of the per-repeat differences now - before: {paired:+.2f} s"
    )
    shares = {name: (walls[name] - coff) / coff for name in names[1:]}
    raw["cli"] = {"epochs": a.cli_epochs, "before": a.before, "off": coff, "paired": paired,
                  "runs": cres, "medians": walls, "overhead": shares}  # fmt: skip
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="MNIST autoencoder epochs")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cli-epochs", type=int, default=30, help="digits epochs per stage")
    parser.add_argument("--no-cli", action="store_true", help="skip the src.train CLI part")
    parser.add_argument("--no-in-process", action="store_true", help="skip the MNIST part")
    parser.add_argument("--before", default="HEAD", help="git ref of src/tracking.py 'before'")
    a = parser.parse_args()
    started = meta()
    print(header("Tracking overhead (MLflow on vs off)"))
    import mlflow

    tmp = Path(tempfile.mkdtemp(prefix="tracking-bench-"))
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store
    start = time.perf_counter()
    mlflow.set_tracking_uri(store)
    mlflow.create_experiment("ae-classify", (tmp / "artifacts").as_uri())  # not ./mlruns
    create = time.perf_counter() - start

    loads, rows, summary, raw = [], [], "", {}
    if not a.no_in_process:
        rows = in_process_rows(a, tmp, loads, raw)
    if not a.no_cli:
        cli_part, summary = cli_rows(a, tmp, store, loads, raw)
        rows += cli_part
    columns = ["run", "wall (s, median)", "tracking overhead", "of which log_model (s)",
               "val loss / test accuracy"]  # fmt: skip
    print(table(columns, rows))
    print(summary)
    print(
        f"\n{a.repeats} repeats, variants alternating; batch {a.batch_size}; creating the SQLite "
        f"store (once, not in the figures): {create:.2f} s; load average after each run: "
        f"{', '.join(loads)}\nTarget: overhead <= 3 % of training time."
    )
    write_results("tracking", {"repeats": a.repeats, "store_creation": create, "loads": loads,
                               "blas_env": blas_env(), **raw},
                  started)  # fmt: skip


if __name__ == "__main__":
    main()
