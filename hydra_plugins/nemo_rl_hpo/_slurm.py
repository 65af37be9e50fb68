"""What the launchers know about jobs and their scheduler: the typed error of a job that died
without a result, Slurm's verdict on a job (``sacct``), and whether a job still runs (``squeue``
for Slurm, the pid for a local job).

The sweeper reads :class:`JobDied`'s fields; nothing outside this module and ``launchers.py``
looks at submitit's exceptions or Slurm's output.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.liveness import local_process_alive

log = logging.getLogger(__name__)

# Slurm states after which a job may still produce a result, or whose end sacct has not seen.
NOT_FINAL = ("RUNNING", "COMPLETING", "PENDING", "REQUEUED", "CONFIGURING", "UNKNOWN")
# squeue states of a job that is still the scheduler's business (queued, running or requeued).
ALIVE = frozenset(
    {
        "PENDING",
        "RUNNING",
        "REQUEUED",
        "CONFIGURING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
    }
)


class JobDied(RuntimeError):
    """A launched job ended without a result (killed, out of memory, over its time limit).

    ``job_id`` is the scheduler's id (a pid for a local submitit job), ``state`` Slurm's final
    state when the job ran under Slurm and it is known, ``detail`` the launcher's own words.
    """

    def __init__(
        self, detail: str, *, job_id: str | None, scheduler: str, state: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.job_id = job_id
        self.scheduler = scheduler
        self.state = state

    @property
    def reason(self) -> str:
        """One line for the trial's failure reason, with Slurm's verdict when there is one."""
        if self.scheduler == "slurm" and self.state and self.job_id:
            return f"Slurm job {self.job_id} ended {self.state}; {self.detail}"
        return self.detail

    @classmethod
    def from_submitit(cls, job: Any, error: BaseException, scheduler: str) -> JobDied:
        """Wrap what ``job.results()`` raised for a job that left no result.

        submitit's ``UncompletedJobError`` says the job's id and state on its first two lines;
        they are kept as the detail. Under Slurm the state is asked from sacct (which can lag
        the job's end on a busy controller), submitit's own view being the fallback, so a
        time-out still says TIMEOUT.
        """
        import submitit

        lines = str(error).strip().splitlines()
        n = 2 if isinstance(error, submitit.core.utils.UncompletedJobError) else 1
        detail = f"{type(error).__name__}: {' '.join(lines[:n])}"
        job_id = str(getattr(job, "job_id", "") or "") or None
        state = None
        if scheduler == "slurm" and job_id:
            seen = _submitit_state(job)
            state = final_state(job_id, seen)
        return cls(detail, job_id=job_id, scheduler=scheduler, state=state)


def _submitit_state(job: Any) -> str | None:
    try:
        return str(job.state).split()[0].upper() or None
    except Exception:  # submitit's watcher asks sacct itself; it may fail the same way
        return None


def final_state(job_id: str, seen: str | None = None, attempts: int = 20) -> str | None:
    """Slurm's final state of a job, or ``seen`` (submitit's view) when sacct has none yet."""
    state = sacct_state(job_id, attempts)
    if (state is None or state in NOT_FINAL) and seen and seen not in NOT_FINAL:
        return seen
    return state


def sacct_state(job_id: str, attempts: int = 20) -> str | None:
    """The job's final state from sacct (e.g. TIMEOUT, OUT_OF_MEMORY, CANCELLED), if known.

    Right after a job dies sacct may not know it yet, or still say RUNNING or COMPLETING: ask
    again for a while (about 30 s; this runs only for a job that died without a result).
    """
    state: str | None = None
    for attempt in range(attempts):
        try:
            proc = subprocess.run(
                ["sacct", "-n", "-X", "-j", job_id, "-o", "State%30", "--parsable2"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return state
        if proc.returncode != 0:  # no accounting on this cluster: nothing to wait for
            return state
        out = proc.stdout.split()
        state = out[0] if out else None
        if state is not None and state not in NOT_FINAL:
            return state
        if attempt < attempts - 1:
            time.sleep(1.5)
    return state


def squeue_alive(job_id: str) -> bool:
    """Whether Slurm still has the job (queued, running, requeued); False when squeue fails."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.upper() in ALIVE


def job_alive(user_attrs: Mapping[str, Any]) -> bool:
    """Whether the job of a trial still runs: Slurm by its id, a local job by host and pid.

    ``user_attrs`` are the trial's, where the job recorded itself when it started.
    """
    sid = user_attrs.get(records.SLURM_JOB_ID)
    if sid:
        return squeue_alive(str(sid))
    alive = local_process_alive(user_attrs.get(records.JOB_HOST), user_attrs.get(records.JOB_PID))
    return bool(alive)
