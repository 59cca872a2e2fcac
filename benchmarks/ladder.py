"""docs/ladder.md's speed and accuracy of the Ladder network (src/ladder.py), measured in parts.
Each part is its own entry of benchmarks/results/ladder.json (with the command, commit, date,
machine and load that measured it), so that a part can be measured again on its own; `python
-m benchmarks.publish` renders the blocks ladder-speed and ladder-accuracy from that file.

Parts:
  steps   the full Ladder on MNIST (experiment=mnist_ladder, seed 42), compiled as
          src.ladder.fit compiles it but with jit_compile off, then on: one fit of two passes
          over --steps + 1 joint batches. "first" is the wall time from the fit call to the end
          of step --steps (tracing, the shuffle buffer and the first steps); "second" that of
          steps 2 to --steps + 1 of the second pass (the traced step alone).
  mnist   short schedules through src.ladder's own code (src.ladder.pretrain minus the decoder
          of the codes: models.build, data.labelled, ladder.fit, export_encoder,
          classifier_of): the full Ladder for 5 epochs, the Γ-model for 10 with its preset's top
          denoising weight and with 0.1. Per setting: wall and CPU seconds of the fit, seconds
          per epoch, validation accuracy on the 10 labels per class it chooses on, on all the
          validation images, and test accuracy. The entry is written after each setting.
  digits  `python -m src.train experiment=digits_ladder mlflow.enabled=false` with its own cache
          and run folder (wall and CPU seconds, its metrics.json); then `python -m src.params
          experiment=digits_ladder && dvc repro` in a fresh clone of HEAD with this venv's
          python and dvc (wall and CPU seconds of each, against the 2-minute target).

Usage (from the repository root; what each part took is in the results file, and
docs/ladder.md publishes it):
  python benchmarks/ladder.py steps            # XLA's steps are the slow ones
  python benchmarks/ladder.py mnist            # 5 + 10 + 10 MNIST epochs: the longest part
  python benchmarks/ladder.py digits           # src.train, then dvc repro
  python benchmarks/ladder.py digits --keep    # keep the run folder and the clone, printed

A smoke test (its numbers are not the documented settings: delete the results file after it):
  python benchmarks/ladder.py steps mnist --steps 2 --epochs 1 --max-steps 3
  python benchmarks/ladder.py digits --set model.epochs=2 --set pretrain.epochs=2

CPU seconds are the process's own (mnist, steps) or its children's (digits: getrusage), all
threads. Wall times on a shared machine are upper bounds.
"""

import argparse
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks._common from the repository root
from benchmarks._common import MNIST, blas_env, load_avg, meta, update_results  # noqa: E402

NAME = "ladder"  # benchmarks/results/ladder.json
PARTS = ["steps", "mnist", "digits"]
STEPS_PRESET = "experiment=mnist_ladder"
SETTINGS = {  # mnist: name -> (preset, epochs, top denoising weight; None: the preset's)
    "full": ("experiment=mnist_ladder", 5, None),
    "gamma": ("experiment=mnist_ladder_gamma", 10, None),
    "gamma-top-0.1": ("experiment=mnist_ladder_gamma", 10, 0.1),
}
DIGITS_PRESET = "experiment=digits_ladder"
TARGET_SECONDS = 120  # the target: the digits Ladder's `dvc repro` under 2 minutes
TEST_LINE = re.compile(
    r"test accuracy: autoencoder ([\d.]+|nan), PCA ([\d.]+|nan), raw pixels ([\d.]+|nan), "
    r"from scratch ([\d.]+|nan)"
)
TEST_KEYS = ("test_accuracy", "pca_test_accuracy", "raw_test_accuracy", "scratch_test_accuracy")


def test_accuracies(text: str) -> dict[str, float] | None:
    """The last `test accuracy: autoencoder …, PCA …, raw pixels …, from scratch …` line of a
    src.train log as metrics.json's keys; None without one."""
    found = TEST_LINE.findall(text)
    return dict(zip(TEST_KEYS, map(float, found[-1]), strict=True)) if found else None


def weights_override(weights: list[float], top: float) -> str:
    """model.denoising_weights with the last (the top layer's) weight replaced by `top`."""
    return "model.denoising_weights=[" + ",".join(f"{w:g}" for w in [*weights[:-1], top]) + "]"


def config(overrides: list[str]) -> Any:
    """conf/config.yaml composed in process on the shared MNIST file, MLflow off."""
    from hydra import compose, initialize_config_dir

    from src.config import validate

    base = [f"dataset.path={MNIST}", "mlflow.enabled=false"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return validate(compose(config_name="config", overrides=base + overrides))


def mnist_arrays(cfg: Any, loaded: dict) -> dict:
    """The prepared split for cfg.dataset and cfg.seed, as the prepare stage makes it (kept in
    `loaded` for the next call; no cache written)."""
    from src import data

    d = cfg.dataset
    key = (d.name, str(d.path), d.val_size, cfg.seed)
    if key not in loaded:
        loaded[key] = data.prepare(d.name, d.test_size, d.val_size, cfg.seed, d.path,
                                   d.class_names)  # fmt: skip
    return loaded[key]


def clock(max_steps: int | None = None) -> Any:
    """A Keras callback keeping perf_counter() at each epoch's start and end and each step's
    end (`epochs`: a dict per epoch); with max_steps, it stops the fit after that many steps."""
    import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[dict] = []
            self.done = 0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epochs.append({"begin": time.perf_counter(), "steps": []})

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.epochs[-1]["steps"].append(time.perf_counter())
            self.done += 1
            if max_steps is not None and self.done >= max_steps:
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            e = self.epochs[-1]
            e["end"] = time.perf_counter()
            print(f"epoch {epoch + 1}: {e['end'] - e['begin']:.1f} s, {len(e['steps'])} steps",
                  flush=True)  # fmt: skip

    return Clock()


def step_times(cfg: Any, arrays: dict, n: int, jit: bool) -> dict[str, Any]:
    """Seconds of the first n steps (from the fit call, tracing included) and of n steps of a
    second pass, the ladder compiled as src.ladder.fit compiles it with jit_compile `jit`."""
    import keras

    from src import data, ladder, models

    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    net, _ = models.build(cfg.model, arrays["x_train"].shape[1:], cfg.bottleneck)
    s, x_u = net.schedule, arrays["x_train"]
    batch = min(s["batch_size"], len(x_u))
    total = len(x_u) // batch * s["epochs"]  # the schedule's steps, as fit's
    rate = ladder.LinearDecay(s["learning_rate"], int(total * s["decay_start"]), total)
    net.compile(optimizer=keras.optimizers.Adam(rate), jit_compile=jit)
    labelled = data.labelled(arrays["x_train"], arrays["y_train"], cfg.classify.labels_per_class,
                             cfg.seed)  # fmt: skip
    batches = ladder.joint_batches(*labelled, x_u, batch).take(n + 1)
    timer = clock()
    start, cpu = time.perf_counter(), time.process_time()
    net.fit(batches, epochs=2, shuffle=False, verbose=0, callbacks=[timer])
    cpu = time.process_time() - cpu
    first, second = timer.epochs
    return {"jit_compile_used": bool(net.jit_compile), "first": first["steps"][n - 1] - start,
            "second": second["steps"][n] - second["steps"][0], "fit_cpu_seconds": cpu}  # fmt: skip


def measure_steps(args: argparse.Namespace, loaded: dict) -> dict[str, Any]:
    """The steps part: step_times with jit_compile off, then on, and their ratios."""
    cfg = config([STEPS_PRESET, *args.set])
    arrays = mnist_arrays(cfg, loaded)
    times = {}
    for key, jit in (("off", False), ("on", True)):
        times[key] = step_times(cfg, arrays, args.steps, jit)
        print(f"steps, jit_compile {key}: {times[key]}", flush=True)
    s = cfg.model
    return {"preset": STEPS_PRESET, "overrides": args.set, "steps": args.steps,
            "seed": cfg.seed, "batch_size": s.batch_size, "preset_epochs": s.epochs,
            "steps_per_epoch": len(arrays["x_train"]) // s.batch_size, "jit_compile": times,
            "ratio_second": times["on"]["second"] / times["off"]["second"],
            "ratio_first": times["on"]["first"] / times["off"]["first"]}  # fmt: skip


def accuracy(classifier: Any, x: Any, y: Any) -> float:
    """The share of images whose highest-scored class is their label."""
    return float((classifier.predict(x, batch_size=1000, verbose=0).argmax(1) == y).mean())


def setting_overrides(name: str, epochs: int | None, extra: list[str]) -> list[str]:
    """A setting's overrides: its preset, its epochs (or `epochs`), its top weight, `extra`."""
    preset, default, top = SETTINGS[name]
    overrides = [preset, f"model.epochs={epochs or default}"]
    if top is not None:
        weights = list(config([preset, *extra]).model.denoising_weights)
        overrides.append(weights_override(weights, top))
    return [*overrides, *extra]


def run_setting(name: str, args: argparse.Namespace, loaded: dict) -> dict[str, Any]:
    """One setting through src.ladder.pretrain's path (no decoder); its times and accuracies."""
    import keras
    import numpy as np

    from src import data, ladder, models

    overrides = setting_overrides(name, args.epochs, args.set)
    cfg = config(overrides)
    arrays = mnist_arrays(cfg, loaded)
    shape = arrays["x_train"].shape[1:]
    ladder.check_classes(cfg.bottleneck, len(arrays["class_names"]))
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)  # from here on as src.ladder.pretrain
    net, _ = models.build(cfg.model, shape, cfg.bottleneck)
    n, seed = cfg.classify.labels_per_class, cfg.seed
    labelled = data.labelled(arrays["x_train"], arrays["y_train"], n, seed)
    validation = data.labelled(arrays["x_val"], arrays["y_val"], n, seed)
    timer = clock(args.max_steps)
    start, cpu = time.perf_counter(), time.process_time()
    history = ladder.fit(net, labelled, arrays["x_train"], validation, [timer])
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    classifier = ladder.classifier_of(ladder.export_encoder(net, shape))
    epochs = [e["end"] - e["begin"] for e in timer.epochs]
    preset = config([SETTINGS[name][0], *args.set]).model.epochs
    return {
        "overrides": overrides, "variant": cfg.model.variant,
        "top_weight": float(cfg.model.denoising_weights[-1]), "epochs": cfg.model.epochs,
        "preset_epochs": preset, "seed": seed, "labels_per_class": n,
        "steps_per_epoch": len(arrays["x_train"]) // min(cfg.model.batch_size,
                                                         len(arrays["x_train"])),
        "steps_done": timer.done, "seconds": seconds, "cpu_seconds": cpu,
        "epoch_seconds": epochs, "epoch_min": min(epochs),
        "epoch_mean": float(np.mean(epochs)), "epoch_max": max(epochs),
        "val_labels": len(validation[1]), "val_labels_accuracy": accuracy(classifier, *validation),
        "ladder_val_accuracy": float(history["val_accuracy"][-1]),  # the ladder's own, the same
        "n_val": len(arrays["y_val"]), "val_accuracy": accuracy(classifier, arrays["x_val"],
                                                                arrays["y_val"]),
        "n_test": len(arrays["y_test"]),
        "test_accuracy": accuracy(classifier, arrays["x_test"], arrays["y_test"]),
    }  # fmt: skip


def measure_mnist(args: argparse.Namespace, loaded: dict, started: dict) -> dict[str, Any]:
    """Every setting in turn; the part's entry written after each (a crash keeps the others)."""
    entry: dict[str, Any] = {**started, "blas_env": blas_env(), "max_steps": args.max_steps,
                             "settings": {}}  # fmt: skip
    for name in SETTINGS:
        entry["settings"][name] = run_setting(name, args, loaded)
        print(f"mnist, {name}: {entry['settings'][name]}", flush=True)
        update_results(NAME, "parts", "mnist", {**entry, "load_at_end": load_avg()}, PARTS)
    return entry


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> dict[str, Any]:
    """Wall and CPU seconds (the child and the children it waited for) and output of `cmd`;
    SystemExit with its last lines if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        tail = "\n".join(done.stdout.splitlines()[-30:])
        raise SystemExit(f"error: `{' '.join(cmd)}` in {cwd} failed ({done.returncode}):\n{tail}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"seconds": seconds, "cpu_seconds": cpu, "output": done.stdout}


def digits_train(tmp: Path, overrides: list[str]) -> dict[str, Any]:
    """`python -m src.train experiment=digits_ladder mlflow.enabled=false` with its own cache and
    run folder: times, its metrics.json (test accuracies also read off its log line)."""
    import yaml

    out = tmp / "run"
    cmd = [sys.executable, "-m", "src.train", DIGITS_PRESET, "mlflow.enabled=false",
           f"paths.cache={tmp / 'cache'}", f"hydra.run.dir={out}", *overrides]  # fmt: skip
    done = run(cmd, ROOT)
    cfg = yaml.safe_load((out / ".hydra" / "config.yaml").read_text())
    metrics = json.loads((out / cfg["paths"]["metrics"]).read_text())
    logged = test_accuracies(done["output"])
    if logged is None:
        raise SystemExit("error: src.train logged no `test accuracy: ...` line")
    return {"command": " ".join(["python -m src.train", *cmd[3:5], *overrides]),
            "seconds": done["seconds"], "cpu_seconds": done["cpu_seconds"],
            "epochs": cfg["model"]["epochs"], "labels_per_class": cfg["classify"][
                "labels_per_class"], "seed": cfg["seed"],
            **{k: metrics[k] for k in (*TEST_KEYS, "val_accuracy")},
            "logged": logged}  # fmt: skip


def digits_dvc(tmp: Path, overrides: list[str]) -> dict[str, Any]:
    """`python -m src.params experiment=digits_ladder && dvc repro` in a fresh clone of HEAD, with
    this venv's python and dvc first on PATH: times of each, the stages dvc ran."""
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone,
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    venv = Path(sys.executable).parent  # not resolved: the venv's python, not the one it links
    dvc = venv / "dvc" if (venv / "dvc").is_file() else Path(shutil.which("dvc") or "dvc")
    env = {**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the clone's own store, as params.yaml says
    params = run([sys.executable, "-m", "src.params", DIGITS_PRESET, *overrides], clone, env)
    repro = run([str(dvc), "repro"], clone, env)
    stages = re.findall(r"Running stage '([^']+)'", repro["output"])
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    return {"command": f"python -m src.params {' '.join([DIGITS_PRESET, *overrides])} && dvc "
            "repro", "clone_commit": commit, "params_seconds": params["seconds"],
            "params_cpu_seconds": params["cpu_seconds"], "seconds": repro["seconds"],
            "cpu_seconds": repro["cpu_seconds"], "stages": stages,
            "test_accuracy": metrics["test_accuracy"]}  # fmt: skip


def measure_digits(args: argparse.Namespace) -> dict[str, Any]:
    """The digits part in a temporary folder (kept with --keep): src.train, then dvc repro."""
    tmp = Path(tempfile.mkdtemp(prefix="ladder-digits-"))
    try:
        train = digits_train(tmp, args.set)
        print(f"digits, src.train: {train}", flush=True)
        repro = digits_dvc(tmp, args.set)
        print(f"digits, dvc repro: {repro}", flush=True)
    finally:
        if args.keep:
            print(f"kept {tmp} (run/: src.train's run folder, clone/: the dvc clone)", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"overrides": args.set, "train": train, "dvc": repro,
            "target_seconds": TARGET_SECONDS,
            "target_met": repro["seconds"] <= TARGET_SECONDS}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="+", choices=PARTS, metavar="PART",
                        help=f"one or more of {', '.join(PARTS)}")  # fmt: skip
    parser.add_argument("--steps", type=int, default=100, help="steps: steps timed per pass")
    parser.add_argument("--epochs", type=int, help="mnist: every setting's epochs (smoke test)")
    parser.add_argument("--max-steps", type=int, help="mnist: stop each fit after this many steps "
                        "(smoke test)")  # fmt: skip
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every part (smoke test), repeatable",
    )
    parser.add_argument("--keep", action="store_true", help="digits: keep the temporary folders")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if {"steps", "mnist"} & set(args.parts):
        from src.runtime import quiet_tensorflow

        quiet_tensorflow()  # no C++ start-up lines, no retracing warnings (every model traces)
    loaded: dict = {}  # MNIST's arrays, prepared once for steps and mnist
    for part in dict.fromkeys(args.parts):
        started = meta()
        if part == "steps":
            values = measure_steps(args, loaded)
        elif part == "mnist":
            values = measure_mnist(args, loaded, started)
        else:
            values = measure_digits(args)
        entry = {**started, "blas_env": blas_env(), **values, "load_at_end": load_avg()}
        update_results(NAME, "parts", part, entry, PARTS)
    print("the blocks: python -m benchmarks.publish (docs/ladder.md)", flush=True)


if __name__ == "__main__":
    main()
