import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from src import data

ROOT = Path(__file__).resolve().parent.parent
# Short training for tests that need trained models but not good ones: 2 epochs each (the
# histories have 2 rows, the metrics are above chance), t-SNE maps of 100 test images. A test
# that needs more appends its own override after it (the last value of a key wins).
TINY = ["pretrain.epochs=2", "classify.epochs=2", "evaluate.tsne_max_samples=100"]


def make_cfg(*overrides: str):
    """Compose the real conf/ with overrides, as the stages' @hydra.main does."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="session")
def digits():
    return data.prepare("digits", test_size=0.2, val_size=0.1, seed=0)


@contextmanager
def mlflow_store(uri: str) -> Iterator[None]:
    """MLflow in this process logs to `uri` inside the block (MLFLOW_TRACKING_URI, as run_cli
    gives commands), and afterwards where it did before: src.tracking sets MLflow's global
    tracking URI, which would otherwise outlive the test."""
    from unittest import mock

    import mlflow
    from mlflow.tracking._tracking_service import utils

    before = utils._tracking_uri  # None unless something set it; MLflow has no public getter
    with mock.patch.dict(os.environ, {"MLFLOW_TRACKING_URI": uri}):
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before)  # patch.dict then restores the environment


def run_stages(
    project: Path,
    *overrides: str,
    stages: tuple = ("prepare", "pretrain", "classify", "evaluate"),
    tracked: bool = False,
) -> None:
    """The stages' run() in this process, writing into `project` as their command lines would
    (without a Python start and TensorFlow import each); `tracked` logs to project's store."""
    from src import classify, evaluate, prepare, pretrain, tracking
    from src.config import select_params, validate

    cfg = validate(make_cfg(f"mlflow.enabled={str(tracked).lower()}", *overrides))
    modules = {
        "prepare": prepare,
        "pretrain": pretrain,
        "classify": classify,
        "evaluate": evaluate,
    }
    with mlflow_store(f"sqlite:///{project / 'mlflow.db'}"):
        for name in stages:
            params = select_params(cfg, modules[name].PARAMS)
            with tracking.start_run(cfg, name, params, {"stage": name}):
                if name == "prepare":
                    arrays = prepare.run(cfg, project)
                else:
                    arrays = data.load(project / cfg.paths.prepared)
                    modules[name].run(cfg, arrays, project)


def copy_project(dest: Path) -> Path:
    """A copy of the project's code and config in `dest`, as in a user's clone."""
    for name in ("src", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, dest / name)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_client(project: Path):
    """An MlflowClient on the private SQLite store that run_cli gives commands in `project`."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def wait_until_answers(url: str, server: subprocess.Popen, seconds: float) -> float:
    """Poll `url` until the server started as `server` answers; return the seconds it took.
    Fails with the server's stderr if it exits, or after `seconds`."""
    start = time.perf_counter()
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return time.perf_counter() - start
        except OSError:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            assert time.perf_counter() - start < seconds, f"no answer on {url} in {seconds} s"
            time.sleep(0.5)


def run_cli(
    cwd: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m ...` (or another command) in cwd with a private MLflow store."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    store = f"sqlite:///{cwd / 'mlflow.db'}"
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": store, **(env or {})}
    cmd = [sys.executable, *args] if args[0] == "-m" else list(args)
    if args[0] == "dvc":
        cmd = [sys.executable, "-m", "dvc", *args[1:]]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(autouse=True, scope="session")
def _private_mlflow_store(tmp_path_factory):
    """Keep the test process itself off the repository's mlflow.db."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(autouse=True)
def _no_experiment_of_an_earlier_test():
    """mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID into os.environ: a process that a
    later test starts on another store would look for that experiment there (seen in CI)."""
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


# PostgreSQL comes from Debian's `postgresql` package (.ci/run installs it when absent) and runs
# on loopback as its own `postgres` user under a temporary data folder.
def _pg_bin() -> Path:
    """The folder of PostgreSQL's server programs (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("no PostgreSQL in /usr/lib/postgresql: apt-get install postgresql")
    if os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("PostgreSQL runs as the postgres user here: needs root and runuser")
    return Path(found[-1]).parent


def _as_postgres(*cmd: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True)


@contextmanager
def postgres_server(*settings: str) -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 with the databases `mlflow` and `optuna` and
    extra `settings` ("max_connections=300"); yields the SQLAlchemy URI of `mlflow`."""
    pg = _pg_bin()
    data = Path(tempfile.mkdtemp(prefix="ae-classify-pg-"))
    shutil.chown(data, "postgres", "postgres")
    port = free_port()
    _as_postgres(str(pg / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres")
    options = " ".join([f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                        *(f"-c {s}" for s in settings)])  # fmt: skip
    _as_postgres(str(pg / "pg_ctl"), "-D", str(data / "db"), "-o", options,
                 "-l", str(data / "log"), "-w", "start")  # fmt: skip
    try:
        for db in ("mlflow", "optuna"):  # MLflow's store; an Optuna storage (test_search.py)
            _as_postgres(str(pg / "createdb") if (pg / "createdb").exists() else "createdb",
                         "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", db)  # fmt: skip
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        _as_postgres(str(pg / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server (postgres_server); yields the SQLAlchemy URI of `mlflow`."""
    with postgres_server() as url:
        yield url


@contextmanager
def mlflow_server(backend: str, artifacts: Path, *options: str,
                  env: dict | None = None) -> Iterator[str]:  # fmt: skip
    """`mlflow server` on `backend` with a local artifact destination and extra command-line
    `options` ("--workers", "8") and environment; yields its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
           "--artifacts-destination", str(artifacts),
           "--host", "127.0.0.1", "--port", str(port), *options]  # fmt: skip
    # without MLflow's job runner: seven huey worker processes the project never uses
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                              start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_until_answers(f"{url}/health", server, 180)
        print(f"mlflow server on PostgreSQL ready in {ready:.1f} s")
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # e.g. its workers stuck on a restarted database
                os.killpg(server.pid, 9)
                server.wait(timeout=30)


@pytest.fixture
def tracking_server(postgres, tmp_path):
    """`mlflow server` on PostgreSQL with a local artifact destination; yields its URL."""
    with mlflow_server(postgres, tmp_path / "artifacts") as url:
        yield url


@pytest.fixture
def slurm():
    """A throwaway one-node Slurm cluster (tests/slurm.py); yields it, SLURM_CONF set in this
    process's environment (its sbatch, squeue, ... and the processes it starts use it)."""
    from tests import slurm as cluster

    if why := cluster.missing():
        pytest.skip(why)
    running = cluster.start()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(running.conf)
    try:
        yield running
    finally:
        os.environ.pop("SLURM_CONF") if old is None else os.environ.update(SLURM_CONF=old)
        cluster.stop(running)
