"""Following a sweep's Slurm jobs (hydra/launcher=slurm) on a cluster that keeps no accounting.

submitit asks `sacct` for its jobs' states. Without accounting sacct fails: submitit warns on
every poll, and never learns that a job ended without a result (cancelled, timed out, killed
for memory), so the sweep would wait for that job for ever. There, the states come from
`squeue` instead; a job squeue no longer lists has ended.

A grid sweep whose job ended without a result (scancel, time limit, a lost node) ends with one
line naming the job, once the sweep's other jobs have ended; a search fails that trial and runs
it again (src/sweeps/optuna_sweeper.py)."""

import logging
import re
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)

from src.sweeps.study import is_search

log = logging.getLogger(__name__)
HEADER = "JobID|State|NodeList"  # the columns submitit reads from sacct
ENDED = "ENDED"  # the state of a job the controller no longer lists (after its MinJobAge)


def accounting_off() -> bool:
    """Whether the cluster that `scontrol` reaches keeps no job accounting (sacct fails)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=60).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return "accounting_storage/none" in out


def squeue_watcher(delay_s: int = 600) -> Any:
    """submitit's watcher of Slurm job states, reading squeue instead of sacct."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueWatcher(SlurmInfoWatcher):
        def _make_command(self) -> list[str] | None:
            if super()._make_command() is None:  # no job left to follow
                return None
            return ["squeue", "--noheader", "--array", "--states=all", "--me", "--format=%i|%T|%N"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            info = super().read_info(f"{HEADER}\n{text}")
            for job_id in self._registered - self._finished - set(info):  # no longer listed
                info[job_id] = {"JobID": job_id, "State": ENDED, "NodeList": ""}
            return info

    return SqueueWatcher(delay_s=delay_s)


def follow_jobs(config: Any) -> None:
    """Before a sweep submits Slurm jobs: without accounting, submitit follows them by squeue."""
    if not str(config.hydra.launcher.get("_target_", "")).endswith(".SlurmLauncher"):
        return
    from submitit.slurm import slurm

    if accounting_off() and not type(slurm.SlurmJob.watcher).__name__ == "SqueueWatcher":
        slurm.SlurmJob.watcher = squeue_watcher()  # submitit's one watcher of every Slurm job
        log.info("Slurm keeps no job accounting here (no sacct): following the jobs with squeue")


def wait_for_array(job_id: str, poll_s: float = 5.0) -> None:
    """Until no task of `job_id`'s array job is pending, running or completing (squeue)."""
    array = job_id.split("_")[0]
    cmd = ["squeue", "--noheader", "--array", f"--jobs={array}", "--states=PD,CF,R,CG"]
    while subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip():
        time.sleep(poll_s)


class SlurmLauncher(SubmititSlurmLauncher):
    """Hydra's submitit Slurm launcher, where a grid's lost job ends the command with one line."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from submitit.core.utils import UncompletedJobError

        try:
            return super().launch(job_overrides, initial_job_idx)
        except UncompletedJobError as e:
            if is_search(self.config):
                raise  # the sweeper fails the trial and runs it again
            found = re.search(r"Job (\S+) .*?\(state: (\w+)\)", str(e), re.DOTALL)
            job, state = found.groups() if found else ("?", "unknown")
            log.info("Slurm job %s ended %s without a result: waiting for the sweep's other "
                     "jobs", job, state)  # fmt: skip
            wait_for_array(job)
            raise SystemExit(
                f"error: Slurm job {job} ended {state} without a result, so its sweep point is "
                f"not done (its log: {self.config.hydra.sweep.dir}/.submitit/{job}/); the "
                "other jobs have ended: run the same command again to run it (finished points "
                "are reused)"
            ) from None
