"""Start-up and no-op: `python -m src.train --cfg job` and `--help` wall time and whether they
import TensorFlow; `dvc repro` with nothing changed, in a fresh clone.

Usage: python benchmarks/startup.py [--repeats 3] [--no-dvc]
The dvc part clones this repository (committed HEAD) into a temporary folder, runs the pipeline
once with 2 + 2 epochs (params.yaml edited in the clone only), then times the no-op `dvc repro`.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import ROOT, header, load_avg, median, meta, table, write_results

# Runs src.train as `python -m src.train ARGS` would, then reports the heavy modules it loaded.
PROBE = """
import runpy, sys
sys.argv = ["src.train", *sys.argv[1:]]
try:
    runpy.run_module("src.train", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
heavy = [m for m in ("tensorflow", "keras", "mlflow", "sklearn") if m in sys.modules]
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def wall(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def heavy_imports(args: list[str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True
    )
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("HEAVY=")]
    return (lines[-1].removeprefix("HEAVY=") or "none") if lines else "probe failed"


def dvc_noop(repeats: int) -> tuple[list[float], str]:
    """Median-able no-op `dvc repro` times in a fresh clone, and `dvc repro`'s last line."""
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        params = yaml.safe_load((clone / "params.yaml").read_text())
        params["pretrain"]["epochs"] = params["classify"]["epochs"] = 2
        params["mlflow"]["enabled"] = False
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run(["dvc", "repro", "-q"], cwd=clone, check=True, capture_output=True)
        times = [wall(["dvc", "repro"], clone) for _ in range(repeats)]
        last = subprocess.run(["dvc", "repro"], cwd=clone, capture_output=True, text=True)
        return times, last.stdout.strip().splitlines()[-1]


def measure(a: argparse.Namespace) -> dict[str, dict]:
    """Each command's wall times, target (seconds, or None), how it compares, heavy imports."""
    py = [sys.executable, "-m", "src.train"]
    out = {}
    for name, args in [("python -m src.train --cfg job", ["--cfg", "job"]),
                       ("python -m src.train --help", ["--help"])]:  # fmt: skip
        times = [wall([*py, *args], ROOT) for _ in range(a.repeats)]
        out[name] = {"seconds": times, "target": 1.5, "below": "<", "heavy": heavy_imports(args)}
    for name, code, heavy in [("python -c pass (interpreter floor)", "pass", "none"),
                              ("python -c 'import tensorflow' (what lazy imports avoid)",
                               "import tensorflow", "tensorflow")]:  # fmt: skip
        times = [wall([sys.executable, "-c", code], ROOT) for _ in range(a.repeats)]
        out[name] = {"seconds": times, "target": None, "below": "-", "heavy": heavy}
    if not a.no_dvc:
        times, last = dvc_noop(a.repeats)
        out[f"dvc repro, nothing changed (`{last}`)"] = {"seconds": times, "target": 2.0,
                                                         "below": "<=", "heavy": "-"}  # fmt: skip
    for x in out.values():
        t, target = median(x["seconds"]), x["target"]
        x["median"] = t
        x["met"] = None if target is None else (t < target if x["below"] == "<" else t <= target)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-dvc", action="store_true", help="skip the dvc repro no-op")
    a = parser.parse_args()
    started = meta()
    print(header("Start-up and no-op"))
    measured = measure(a)
    rows = [[name, f"{x['median']:.2f}", "-" if x["target"] is None else
             f"{x['below']} {x['target']:g}", {None: "-", True: "met", False: "missed"}[x["met"]],
             x["heavy"]] for name, x in measured.items()]  # fmt: skip
    columns = ["command", "wall (s, median)", "target (s)", "target", "heavy modules imported"]
    print(table(columns, rows))
    print(f"\n{a.repeats} repeats each; load average at end {load_avg()}")
    write_results("startup", {"repeats": a.repeats, "commands": measured}, started)


if __name__ == "__main__":
    main()
