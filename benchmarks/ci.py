"""CI's time: `.ci/run` (install, lint, pytest) on a clean clone of a commit, and with --fast
also the in-process tier (`pytest -m "not e2e"`) in that clone afterwards, and with --repro
README's first command's `dvc repro` there and the files `git status` then shows changed. Each
tier's result (tests passed and failed, pytest's own time, the whole run's; for repro its time
and the changed files; commit, date, machine, load) replaces its entry in
benchmarks/results/ci.json; docs/testing.md's table and repeat check are published from it.
Exits with CI's exit code; the log stays in <clone>/ci.log.

Usage: python benchmarks/ci.py [--ref HEAD] [--clone ../ci-clone] [--fast] [--repro]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks._common from the repository root
from benchmarks._common import load_avg, meta, update_results  # noqa: E402

SUMMARY = re.compile(r"=+ (.*) in ([\d.]+)s")  # pytest's last line: "318 passed ... in 775.71s"


def counts(log: str) -> dict:
    """passed/failed/... and pytest's seconds from the last summary line of a pytest log."""
    matches = SUMMARY.findall(log)
    if not matches:
        return {"pytest_seconds": None}
    words, seconds = matches[-1]
    found = {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", words)}
    return {"passed": found.get("passed", 0), "failed": found.get("failed", 0) + found.get(
        "errors", found.get("error", 0)), "pytest_seconds": float(seconds)}  # fmt: skip


def timed(cmd: list[str], cwd: Path, log: Path, env: dict) -> tuple[int, float, str]:
    """(exit code, wall seconds, output) of `cmd`, its output appended to `log`."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)  # fmt: skip
    with open(log, "a") as f:
        f.write(done.stdout)
    return done.returncode, time.perf_counter() - start, done.stdout


def record(tier: str, entry: dict) -> None:
    update_results("ci", "tiers", tier, entry, ["fast", "full", "repro"])


def changed(clone: Path) -> list[str]:
    """`git status --porcelain` lines of the clone, without CI's own log."""
    out = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return [line for line in out.splitlines() if line[3:] != "ci.log"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD")
    parser.add_argument("--clone", type=Path, default=ROOT.parent / "ci-clone")
    parser.add_argument("--fast", action="store_true", help="then time pytest -m 'not e2e'")
    parser.add_argument("--repro", action="store_true", help="then dvc repro and git status")
    a = parser.parse_args()
    shutil.rmtree(a.clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(a.clone)], check=True)
    subprocess.run(["git", "checkout", "-q", a.ref], cwd=a.clone, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=a.clone,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    log, env = a.clone / "ci.log", {**os.environ, "CI": "true"}
    started = {**meta(), "commit": commit}
    code, seconds, out = timed(["bash", ".ci/run"], a.clone, log, env)
    record("full", {**started, "exit_code": code, "seconds": seconds, **counts(out),
                    "load_at_end": load_avg()})  # fmt: skip
    print(f"CI of {commit}: exit {code}, {seconds:.0f} s; log {log}", file=sys.stderr)
    if a.fast and code == 0:
        started = {**meta(), "commit": commit}
        cmd = [str(a.clone / ".venv/bin/pytest"), "-m", "not e2e", "-q"]
        fast_code, _, out = timed(cmd, a.clone, log, env)
        record("fast", {**started, "exit_code": fast_code, **counts(out),
                        "load_at_end": load_avg()})  # fmt: skip
    if a.repro and code == 0:  # README's first command, its install done by .ci/run
        started = {**meta(), "commit": commit}
        path = f"{a.clone / '.venv/bin'}{os.pathsep}{env['PATH']}"
        repro_code, seconds, _ = timed(["dvc", "repro"], a.clone, log, {**env, "PATH": path})
        record("repro", {**started, "exit_code": repro_code, "seconds": seconds,
                         "changed": changed(a.clone), "load_at_end": load_avg()})  # fmt: skip
        code = code or repro_code
    raise SystemExit(code)


if __name__ == "__main__":
    main()
