"""Load simulation of a search's bookkeeping (docs/search.md): N workers of
`python -m src.train hydra/sweeper=optuna -m` share one study on a throwaway PostgreSQL and one
throwaway `mlflow server`, M trials in all. The sweeper, callback, study, parent run and champion
are the project's; each trial's training is a test double of known value and random duration
(benchmarks/sweep_load_worker.py).

Per scale: trials per second, bookkeeping seconds per trial (a trial's ask and run, less its fake
training), peak database connections (pg_stat_activity), peak worker memory (RSS), the final
summary and champion step's wall time; and the checks: exactly M trials COMPLETE or PRUNED, each
with one child run under the one parent, the parent finished once, the champion registered once
and the best trial by validation accuracy, no run left RUNNING. --kill runs a scale
again with a quarter of the workers killed with SIGKILL a third of the way and restarted.

Usage: python benchmarks/sweep_load.py [--scales 2x200 8x200 32x200 8x1000] [--kill 8x200 32x200]
Writes benchmarks/results/sweep_load.json and prints a markdown table.
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import ROOT, header, meta, table, write_results  # noqa: E402

RESULTS_NAME = "sweep_load"
WORKER = ROOT / "benchmarks" / "sweep_load_worker.py"
SERVER = ["--workers", "4"]  # mlflow server's default
# connections per database, and those left open in a transaction
CONNECTIONS = """SELECT datname, count(*),
  count(*) FILTER (WHERE state LIKE 'idle in transaction%')
FROM pg_stat_activity WHERE datname IN ('optuna', 'mlflow') GROUP BY datname"""
SERVER_ENV = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "5", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "10"}


def worker_args(name: str, trials: int, storage: str, sweep_dir: Path, grace: int) -> list[str]:
    """The worker's `python -m src.train` arguments: one study, experiment and model `name`; a
    trial without a heartbeat for `grace` seconds is failed and retried."""
    return ["hydra/sweeper=optuna", f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={name}",
            "hydra.sweeper.heartbeat_interval=2", f"hydra.sweeper.grace_period={grace}",
            "hydra.sweeper.pruner.n_startup_trials=5", "hydra.sweeper.pruner.n_warmup_steps=1",
            f"mlflow.experiment_name={name}", f"mlflow.registered_model_name={name}",
            f"hydra.sweep.dir={sweep_dir}", "-m"]  # fmt: skip


class Workers:
    """The worker processes of one scale: started, killed, restarted, waited for."""

    def __init__(self, args: list[str], folder: Path, env: dict[str, str]) -> None:
        self.args, self.folder, self.env = args, folder, env
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, i: int) -> None:
        log = open(self.folder / f"worker-{i}.log", "a")  # noqa: SIM115 (the child's)
        args = [a.replace("{i}", str(i)) for a in self.args]
        self.procs[i] = subprocess.Popen([sys.executable, str(WORKER), *args], cwd=self.folder,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        log.close()

    def kill(self, i: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # it has ended
            os.killpg(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait()

    def running(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def stop(self) -> None:
        for i, proc in self.procs.items():
            if proc.poll() is None:
                self.kill(i)


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB (0 if it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler(threading.Thread):
    """Peak PostgreSQL connections per database and peak worker RSS, every half second."""

    def __init__(self, postgres: str, workers: Workers) -> None:
        super().__init__(daemon=True)
        self.postgres, self.workers, self.stop = postgres, workers, threading.Event()
        self.peak: Counter = Counter()

    def sample(self, connection: Any) -> None:
        counts = Counter()
        for database, n, idle in connection.execute(CONNECTIONS).fetchall():
            counts.update({database: n, f"{database}_idle_in_transaction": idle})
        counts["total"] = counts["optuna"] + counts["mlflow"]
        rss = [rss_mb(pid) for pid in self.workers.running()]
        counts.update(worker_rss_mb=max(rss, default=0), workers_rss_mb=sum(rss))
        self.peak.update({k: v - self.peak[k] for k, v in counts.items() if v > self.peak[k]})

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.postgres.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
            while not self.stop.wait(0.5):
                self.sample(c)


def stats(path: Path) -> tuple[list[dict], list[dict]]:
    """(one record per trial run, one per worker end) from the workers' SWEEP_LOAD_STATS."""
    lines = [json.loads(s) for s in path.read_text().splitlines()] if path.is_file() else []
    return [s for s in lines if "trial" in s], [s for s in lines if "end_seconds" in s]


def all_runs(client: Any, experiment_id: str) -> list:
    """Every run of the experiment, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += page
        if not (token := page.token):
            return runs


def champion_trial(client: Any, name: str) -> tuple[int | None, int]:
    """(the trial of the run the model `name`'s champion alias names, how many versions)."""
    versions = client.search_model_versions(f"name = '{name}'")
    try:
        run_id = client.get_model_version_by_alias(name, "champion").run_id
    except Exception:  # no model or no alias
        return None, len(versions)
    return int(client.get_run(run_id).data.tags["optuna_trial"]), len(versions)


def check(storage: str, tracking_uri: str, name: str, trials: int) -> dict[str, Any]:
    """What the study and the tracking server hold at the end, and what is lost or doubled."""
    import optuna
    from mlflow import MlflowClient

    from src.sweeps.optuna_study import counted

    study = optuna.load_study(study_name=name, storage=storage)
    every = study.get_trials(deepcopy=False)
    done = [t for t in counted(every) if t.state.name in ("COMPLETE", "PRUNED")]
    client = MlflowClient(tracking_uri)
    runs = all_runs(client, client.get_experiment_by_name(name).experiment_id)
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    parent_ids = {p.info.run_id for p in parents}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in parent_ids]
    per_trial = Counter(r.data.tags.get("optuna_trial") for r in children)
    runs_of_done = [per_trial[str(t.number)] for t in done]
    best = {t.number for t in done if t.state.name == "COMPLETE" and t.value == study.best_value}
    champion, versions = champion_trial(client, name)
    surplus = sum(bool(t.user_attrs.get("surplus")) for t in every)  # never launched
    return {"study_trials": len(every), "complete": sum(t.state.name == "COMPLETE" for t in done),
            "pruned": sum(t.state.name == "PRUNED" for t in done),
            "retried": len(every) - len(counted(every)) - surplus, "surplus": surplus,
            "lost": max(0, trials - len(done)) + runs_of_done.count(0),
            "duplicated": max(0, len(done) - trials) + sum(max(0, n - 1) for n in runs_of_done),
            "child_runs": len(children), "parents": len(parents),
            "parent_status": [p.info.status for p in parents],
            "running_runs": sum(r.info.status == "RUNNING" for r in runs),
            "model_versions": versions, "champion_is_best": champion in best}  # fmt: skip


def ok(checks: dict[str, Any], finishes: int) -> bool:
    """Whether the scale passed every check."""
    return (checks["lost"] == checks["duplicated"] == checks["running_runs"] == 0
            and checks["parent_status"] == ["FINISHED"] and finishes == 1
            and checks["model_versions"] == 1 and checks["champion_is_best"])  # fmt: skip


def drive(workers: Workers, n: int, trials: int, kill: bool, stats_file: Path) -> tuple[int, bool]:
    """Start n workers; with `kill`, SIGKILL a quarter of them once a third of the trials have
    run, and restart them. Wait for all: (how many were killed, whether all ended in time)."""
    for i in range(n):
        workers.start(i)
    killed = []
    deadline = time.monotonic() + 600 + 3 * trials
    while workers.running():
        if time.monotonic() > deadline:
            return len(killed), False
        if kill and not killed and len(stats(stats_file)[0]) >= trials // 3:
            killed = list(range(math.ceil(n / 4)))
            for i in killed:
                workers.kill(i)
            for i in killed:
                workers.start(i)
        time.sleep(0.5)
    return len(killed), True


def measures(ran: list[dict], ends: list[dict], trials: int, wall: float) -> dict[str, Any]:
    """Throughput, bookkeeping per trial and the final step's time, from the workers' records."""

    def mean(key: str) -> float:
        return sum(r.get(key, 0.0) for r in ran) / max(1, len(ran))

    finishers = [e["end_seconds"] for e in ends if e["finished_parent"]]
    return {"wall_seconds": wall, "trials_per_second": trials / wall,
            "bookkeeping_seconds_per_trial": mean("seconds") - mean("objective"),
            "storage_seconds_per_trial": mean("storage"),
            "tracking_seconds_per_trial": mean("tracking"),
            "objective_seconds_per_trial": mean("objective"),
            "summary_seconds": max(finishers, default=None), "parent_finishes": len(finishers),
            "worker_max_rss_mb": max((e["max_rss_mb"] for e in ends), default=None)}  # fmt: skip


def run_scale(postgres: str, tracking_uri: str, folder: Path, n: int, trials: int,
              kill: bool = False, trial_seconds: float = 0.2, grace: int = 60
              ) -> dict[str, Any]:  # fmt: skip
    """One scale: n workers, `trials` trials in all, on a fresh study, experiment and model;
    the workers' folders and logs in `folder`."""
    name = f"load-{n}w-{trials}t{'-kill' if kill else ''}-{int(time.time())}"
    storage = postgres.rsplit("/", 1)[0] + "/optuna"
    folder = folder / name
    folder.mkdir(parents=True)
    stats_file = folder / "stats.jsonl"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "SWEEP_LOAD_STATS": str(stats_file),
           "SWEEP_LOAD_TRIAL_SECONDS": str(trial_seconds)}  # fmt: skip
    workers = Workers(worker_args(name, trials, storage, folder / "w{i}", grace), folder, env)
    sampler = Sampler(postgres, workers)
    sampler.start()
    start = time.perf_counter()
    try:
        killed, in_time = drive(workers, n, trials, kill, stats_file)
    finally:
        workers.stop()
        sampler.stop.set()
        sampler.join()
    measured = measures(*stats(stats_file), trials, time.perf_counter() - start)
    checks = check(storage, tracking_uri, name, trials)
    passed = in_time and ok(checks, measured["parent_finishes"])
    exits = [p.returncode for p in workers.procs.values()]
    return {"workers": n, "trials": trials, "killed": killed, **measured,
            "peak": dict(sampler.peak), "exit_codes": exits, "ended_in_time": in_time, **checks,
            "ok": passed}  # fmt: skip


COLUMNS = ["workers", "trials", "killed", "trials/s", "bookkeeping s/trial",
           "of which study database / tracking server", "lost", "duplicated", "complete",
           "pruned", "retried", "peak connections optuna/mlflow", "peak worker RSS MB (one/all)",
           "summary and champion s", "checks"]  # fmt: skip


def cells(r: dict[str, Any]) -> list:
    """One scale's row of the markdown table."""
    peak, summary = r["peak"], r["summary_seconds"]
    return [r["workers"], r["trials"], r["killed"], f"{r['trials_per_second']:.2f}",
            f"{r['bookkeeping_seconds_per_trial']:.2f}",
            f"{r['storage_seconds_per_trial']:.2f} / {r['tracking_seconds_per_trial']:.2f}",
            r["lost"], r["duplicated"], r["complete"], r["pruned"], r["retried"],
            f"{peak.get('optuna', 0)}/{peak.get('mlflow', 0)}",
            f"{peak.get('worker_rss_mb', 0):.0f}/{peak.get('workers_rss_mb', 0):.0f}",
            "–" if summary is None else f"{summary:.1f}",
            "ok" if r["ok"] else "FAILED"]  # fmt: skip


def markdown(rows: list[dict]) -> str:
    """The results as a markdown table."""
    return table(COLUMNS, [cells(r) for r in rows])


def main() -> None:
    from tests.conftest import mlflow_server, postgres_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["2x200", "8x200", "32x200", "8x1000"],
                        help="workers x trials, one per scale")  # fmt: skip
    parser.add_argument("--kill", nargs="*", default=["8x200", "32x200"],
                        help="scales run again with a quarter of the workers killed (SIGKILL) "
                        "a third of the way and restarted")  # fmt: skip
    parser.add_argument(
        "--max-connections",
        type=int,
        default=400,
        help="PostgreSQL's max_connections (its default, 100, is reached at 32 workers)",
    )
    parser.add_argument(
        "--trial-seconds",
        type=float,
        default=0.2,
        help="mean duration of a fake trial (uniform in [0, 2 x this])",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill: the servers stopped too
    started, rows = meta(), []
    runs = [(s, False) for s in args.scales] + [(s, True) for s in args.kill]
    tmp = Path(tempfile.mkdtemp(prefix="sweep-load-"))
    postgres = [f"max_connections={args.max_connections}"]
    with postgres_server(*postgres) as pg:
        with mlflow_server(pg, tmp / "artifacts", *SERVER, env=SERVER_ENV) as url:
            for scale, kill in runs:
                n, m = (int(x) for x in scale.split("x"))
                rows.append(run_scale(pg, url, tmp, n, m, kill, args.trial_seconds))
                print(markdown(rows[-1:]), flush=True)
    if all(r["ok"] for r in rows):
        shutil.rmtree(tmp)
    else:
        print(f"the workers' logs: {tmp}", file=sys.stderr)
    settings = {"postgres": postgres, "mlflow_server": SERVER, "mlflow_server_env": SERVER_ENV,
                "trial_seconds": args.trial_seconds}  # fmt: skip
    write_results(RESULTS_NAME, {"settings": settings, "scales": rows}, started)
    print(header("Sweep bookkeeping under load") + "\n" + markdown(rows))


if __name__ == "__main__":
    main()
