"""A throwaway one-node Slurm cluster for tests, like the PostgreSQL one in conftest.py: Debian's
`slurmctld`, `slurmd`, `slurm-client` and `munge` packages (.ci/run installs them when absent),
a minimal slurm.conf for this host in a temporary folder (no accounting, no cgroups), and its
own munged, slurmctld and slurmd, stopped by PID afterwards. The daemons run as root."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port

PACKAGES = "slurmctld slurmd slurm-client munge"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
PARTITION = "debug"
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"}


def missing() -> str | None:
    """Why this machine cannot run the cluster, or None when it can."""
    absent = [p for p in (*DAEMONS, *CLIENTS, "mungekey") if not shutil.which(p)]
    for folder in ("/usr/sbin", "/sbin"):  # daemons are not on a user's PATH
        absent = [p for p in absent if not (Path(folder) / p).exists()]
    if absent:
        return f"no Slurm ({' '.join(absent)}): apt-get install {PACKAGES}"
    if os.geteuid() != 0:
        return "the throwaway Slurm cluster runs its daemons as root: needs root"
    return None


def program(name: str) -> str:
    """The path of a Slurm or MUNGE program (the daemons live in /usr/sbin)."""
    return shutil.which(name) or str(next(Path(f) / name for f in ("/usr/sbin", "/sbin")
                                          if (Path(f) / name).exists()))  # fmt: skip


def machine() -> tuple[int, int]:
    """(CPUs, memory in MB) that slurmd will find here; memory with 10 % left to the system."""
    meminfo = Path("/proc/meminfo").read_text().split()
    total_mb = int(meminfo[meminfo.index("MemTotal:") + 1]) // 1024
    return os.cpu_count() or 1, int(total_mb * 0.9)


def slurm_conf(folder: Path, node: str) -> str:
    """A minimal slurm.conf: one node (this host), one partition, everything in `folder`."""
    cpus, memory = machine()
    return f"""\
ClusterName=aetest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder / "munge.socket"}
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "slurmctld.pid"}
SlurmdPidFile={folder / "slurmd.pid"}
SlurmctldLogFile={folder / "slurmctld.log"}
SlurmdLogFile={folder / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
KillWait=5
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmdTimeout=60
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    """A running cluster: its folder, slurm.conf, node name and daemon processes."""

    folder: Path
    conf: Path
    node: str
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """What a process needs in its environment to use this cluster (sbatch, squeue, ...)."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True) -> str:
        """A Slurm client command on this cluster; its stdout."""
        proc = subprocess.run([program(cmd[0]), *cmd[1:]], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        if check and proc.returncode:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def node_state(self) -> str:
        """The node's state as sinfo names it (idle, mixed, allocated, down*, ...)."""
        return self.run("sinfo", "-h", "-N", "-o", "%t", check=False).strip()

    def jobs(self) -> dict[str, str]:
        """{job id: state} of every job the controller remembers (MinJobAge=3600), one entry
        per array task: with accounting off, this is the cluster's job history."""
        out = self.run("squeue", "-h", "-r", "-t", "all", "-o", "%i|%T")
        return dict(line.split("|") for line in out.splitlines() if line)

    def settled(self, seconds: float = 120) -> dict[str, str]:
        """jobs() once none is pending, running or completing (a job whose Python has returned
        its result still takes a moment to end)."""
        deadline = time.monotonic() + seconds
        while (jobs := self.jobs()) and set(jobs.values()) & ACTIVE:
            assert time.monotonic() < deadline, f"Slurm jobs still active: {jobs}"
            time.sleep(1)
        return jobs

    def log(self) -> str:
        """The end of the daemons' logs, for a failure message."""
        return "\n".join(f"--- {p.name}:\n{p.read_text()[-2000:]}"
                         for p in sorted(self.folder.glob("*.log")))  # fmt: skip


def start_daemon(cluster: Cluster, name: str, *args: str) -> None:
    """Start one daemon in the foreground of its own process (so its PID is ours)."""
    out = (cluster.folder / f"{name}.out").open("w")
    cluster.daemons[name] = subprocess.Popen(
        [program(name), *args], env={**os.environ, **cluster.env}, stdout=out,
        stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def wait_for(cluster: Cluster, ready: Callable[[], object], what: str, seconds: float = 60
             ) -> None:  # fmt: skip
    """Poll `ready()` until it is true; fail with the daemons' logs when one exits or after
    `seconds`."""
    deadline = time.monotonic() + seconds
    while not ready():
        dead = [n for n, p in cluster.daemons.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            stop(cluster)
            pytest.fail(f"Slurm: {what} not ready ({dead or 'timeout'}):\n{cluster.log()}")
        time.sleep(0.5)


def start() -> Cluster:
    """munged, slurmctld and slurmd on a new slurm.conf, once the node is idle."""
    folder = Path(tempfile.mkdtemp(prefix="ae-classify-slurm-"))
    folder.chmod(0o755)  # munged wants its socket's folder searchable by all
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    node = socket.gethostname().split(".")[0]
    cluster = Cluster(folder, folder / "slurm.conf", node)
    cluster.conf.write_text(slurm_conf(folder, node))
    key = folder / "munge.key"
    subprocess.run([program("mungekey"), "--create", f"--keyfile={key}"], check=True)
    key.chmod(0o600)
    files = {"key-file": key, "socket": folder / "munge.socket", "pid-file": "munged.pid",
             "log-file": "munged.log", "seed-file": "munged.seed"}  # fmt: skip
    start_daemon(cluster, "munged", "-F", *(f"--{k}={folder / v}" for k, v in files.items()))
    wait_for(cluster, (folder / "munge.socket").exists, "munged")
    start_daemon(cluster, "slurmctld", "-D", "-i", "-f", str(cluster.conf))
    wait_for(cluster, lambda: cluster.run("scontrol", "ping", check=False).count("UP"),
             "slurmctld")  # fmt: skip
    start_daemon(cluster, "slurmd", "-D", "-f", str(cluster.conf), "-N", node)
    wait_for(cluster, lambda: cluster.node_state() == "idle", "the node (idle)")
    return cluster


def stop(cluster: Cluster) -> None:
    """Stop the daemons by PID (slurmd, slurmctld, munged), then remove the folder."""
    for name in reversed(DAEMONS):
        if (proc := cluster.daemons.get(name)) and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    shutil.rmtree(cluster.folder, ignore_errors=True)
