"""The one Slurm client: every ``squeue``/``sacct``/``scontrol``/``scancel`` call, the job-state
vocabulary and the controller-outage back-off.

Both paths that run work under Slurm ask it here: the Hydra launcher (``hydra/launcher=slurm``:
submitit jobs, ``hydra_plugins/nemo_rl_hpo/launchers.py``) and the command runner's ``ray.sub``
jobs (``nemo_rl_hpo/command/``), and so do the trial loop (is a re-attached job still queued?)
and the cost records (what a job used, from the accounting). It lives at the bottom of the
library, Hydra- and Optuna-free, because all of those layers use it; what a job id *means* for
a trial stays with its owners.
"""

from __future__ import annotations

import getpass
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from nemo_rl_hpo.outage import Outage, backoff

log = logging.getLogger(__name__)

T = TypeVar("T")

# ------------------------------------------------------------------------- job states
# squeue states of a job that is still the scheduler's business (queued, running, requeued).
QUEUED = frozenset(
    {
        "PENDING",
        "RUNNING",
        "REQUEUED",
        "CONFIGURING",
        "COMPLETING",
        "SUSPENDED",
        "RESIZING",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
    }
)
# sacct states before a job's end is known (sacct lags the end; UNKNOWN: not recorded yet).
NOT_FINAL = QUEUED | {"UNKNOWN"}
# States a job ends in.
FINAL = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)
# Final states in which Slurm may have ended a job before its batch script ran: the step could
# not be set up (an output file it cannot open, a prolog or launch failure) or the node failed.
NEVER_STARTED = frozenset({"FAILED", "NODE_FAIL", "BOOT_FAIL", "LAUNCH_FAILED"})

_TIMEOUT_S = 30
_INVALID_ID = re.compile(r"Invalid job id", re.I)


def _run(argv: list[str], timeout: float = _TIMEOUT_S) -> subprocess.CompletedProcess[str] | None:
    """A Slurm command's result; None when it could not run (not installed, hung)."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _first_word(state: str) -> str:
    """'CANCELLED by 0' -> 'CANCELLED'."""
    return state.split()[0].upper() if state.strip() else ""


# --------------------------------------------------------------------------- squeue
def queue_state(job_id: str) -> str | None:
    """squeue's state of the job, "" once it has left the queue, None when squeue cannot answer."""
    proc = _run(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if proc is None:
        return None
    if proc.returncode != 0:
        # A job purged from slurmctld's memory (past MinJobAge) is an "invalid job id".
        return "" if _INVALID_ID.search(proc.stderr) else None
    lines = proc.stdout.split()
    return _first_word(lines[-1]) if lines else ""


def in_queue(job_id: str) -> bool:
    """Whether Slurm still has the job (queued, running, requeued); False when squeue fails."""
    return queue_state(job_id) in QUEUED


# ---------------------------------------------------------------------------- sacct
def sacct(job_id: str, fields: str, *, all_runs: bool = False) -> list[list[str]] | None:
    """sacct's rows (fields split on '|') for the job's allocation, None when sacct cannot answer.

    ``all_runs``: every run of a requeued job (``--duplicates``), oldest first; otherwise sacct
    shows the latest run only.
    """
    argv = ["sacct", "-n", "-X", "-P", "-o", fields, "-j", job_id]
    if all_runs:
        argv.append("--duplicates")
    proc = _run(argv)
    if proc is None or proc.returncode != 0:  # no accounting, slurmdbd down
        return None
    return [ln.split("|") for ln in proc.stdout.splitlines() if ln.strip()]


def sacct_state(job_id: str) -> str | None:
    """The job's state in sacct now (latest run), None when sacct has none or cannot answer."""
    rows = sacct(job_id, "State")
    return _first_word(rows[-1][0]) or None if rows else None


def final_state(job_id: str, seen: str | None = None, wait_s: float = 30.0) -> str | None:
    """The job's final state (TIMEOUT, OUT_OF_MEMORY, CANCELLED, ...), if Slurm can say.

    sacct learns of a job's end a moment after it (longer on a busy controller): ask again for
    up to ``wait_s``. ``seen`` (e.g. submitit's own view) is taken when sacct has no final state.
    """
    deadline = time.monotonic() + wait_s
    state: str | None = None
    for delay in backoff(0.5, 2.0):
        rows = sacct(job_id, "State")
        if rows is None:  # no accounting here: nothing to wait for
            break
        state = _first_word(rows[-1][0]) or None if rows else None
        if state is not None and state not in NOT_FINAL:
            return state
        if time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
    if seen and seen not in NOT_FINAL:
        return seen
    return state


def end_reason(job_id: str) -> str | None:
    """``sacct: ExitCode 0:53, Reason None``: sacct's words on how a job ended (signal 53: Slurm
    could not set up the job's I/O, e.g. the directory of its log did not exist)."""
    rows = sacct(job_id, "ExitCode,Reason")
    if not rows or len(rows[-1]) < 2:
        return None
    return f"sacct: ExitCode {rows[-1][0]}, Reason {rows[-1][1]}"


def exit_code(job_id: str) -> int | None:
    """The job's exit code once it has left the queue, as ``sbatch --wait`` would return it.

    ``sbatch --wait`` polls with a growing interval (up to ~30 s after the job ended, measured
    on the local Slurm); asking squeue/sacct directly notices the end within one poll. None
    while the job is still queued or running (or Slurm cannot say yet).
    """
    if queue_state(job_id):
        return None
    rows = sacct(job_id, "State,ExitCode")
    if not rows or len(rows[-1]) < 2:
        return None
    state, code = _first_word(rows[-1][0]), rows[-1][1]
    if state not in FINAL:
        return None
    try:
        rc = int(code.split(":")[0])
    except ValueError:
        rc = 1
    return rc if (rc != 0 or state == "COMPLETED") else 1


# ------------------------------------------------------------------------ accounting
@dataclass(frozen=True)
class Run:
    """One run of a job as the accounting recorded it (a requeued job has several)."""

    state: str
    elapsed_s: float
    gpus: int  # gres/gpu in AllocTRES: the job's total over all its nodes
    nodes: int
    queue_s: float  # Start - Submit (this run's Submit is its requeue time)
    cpu_s: float | None  # TotalCPU, when the cluster gathers it (jobacct_gather)


_USAGE_FIELDS = "State,ElapsedRaw,AllocTRES,NNodes,Submit,Start,TotalCPU"


class AccountingUnavailable(RuntimeError):
    """sacct cannot answer (slurmdbd down, no accounting on this cluster)."""


def runs(job_id: str) -> list[Run] | None:
    """Every run of the job, oldest first, once all have ended; None while one still runs (or
    sacct has not recorded it yet). Raises :class:`AccountingUnavailable` when sacct fails."""
    rows = sacct(job_id, _USAGE_FIELDS, all_runs=True)
    if rows is None:
        raise AccountingUnavailable(f"sacct cannot answer for job {job_id}")
    if not rows:
        return None
    out = []
    for i, row in enumerate(rows):
        if len(row) < 7:
            return None
        state, elapsed, tres, nodes, submit, start, total_cpu = row[:7]
        state = _first_word(state)
        # An earlier run of a requeued job shows REQUEUED (or the state it was killed in):
        # it has ended. The latest run must have ended too.
        if i == len(rows) - 1 and state not in FINAL:
            return None
        out.append(
            Run(
                state=state,
                elapsed_s=float(elapsed or 0),
                gpus=tres_count(tres, "gres/gpu"),
                nodes=int(nodes or 0),
                queue_s=_seconds_between(submit, start),
                cpu_s=duration_s(total_cpu) or None,
            )
        )
    return out


def tres_count(tres: str, name: str) -> int:
    """``name``'s count in a TRES string ('billing=2,cpu=2,gres/gpu=2,mem=2000M,node=1')."""
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key.strip() == name:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def duration_s(text: str) -> float:
    """Seconds in a Slurm duration ('[D-]HH:MM:SS[.fff]', 'MM:SS.fff'); 0.0 when unreadable."""
    text = text.strip()
    if not text:
        return 0.0
    days, _, rest = text.rpartition("-")
    try:
        parts = [float(p) for p in rest.split(":")]
        seconds = 0.0
        for p in parts:
            seconds = seconds * 60 + p
        return seconds + 86400 * int(days or 0)
    except ValueError:
        return 0.0


def _seconds_between(a: str, b: str) -> float:
    try:
        return max(0.0, (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds())
    except ValueError:  # 'Unknown', 'None': the run never started
        return 0.0


# ------------------------------------------------------------------------ scancel
def cancel(job_id: str | None, job_name: str, wait_s: float) -> None:
    """scancel a job (by id, else by its unique name) and wait until it has left the queue, so
    its processes are gone when the caller records it stopped."""
    if shutil.which("scancel") is None:
        log.warning("scancel is not on PATH: the Slurm job keeps running")
        return
    target = [job_id] if job_id else [f"--name={job_name}", f"--user={getpass.getuser()}"]
    _run(["scancel", *target])
    deadline = time.monotonic() + wait_s
    query = ["squeue", "-h", "-o", "%i %T", *(["-j", job_id] if job_id else target)]
    while time.monotonic() < deadline:
        out = _run(query, timeout=15)
        if out is None or out.returncode != 0 or not out.stdout.strip():
            return
        time.sleep(0.5)
    log.warning("Slurm job %s still in the queue %.0f s after scancel", job_id or job_name, wait_s)


# ------------------------------------------------------------- controller outages
DEFAULT_SUBMIT_RETRY_S = 600.0
_AWAY = re.compile(
    r"Unable to contact slurm controller|Slurm temporarily unable to accept job|"
    r"Slurm controller not responding",
    re.I,
)
# One slurmctld per process: every launch thread shares its outage (said once, not per trial).
CONTROLLER = Outage()


class ControllerUnavailable(RuntimeError):
    """slurmctld stayed unreachable past the limit; the message is one line."""


def controller_away(e: BaseException) -> bool:
    """Whether a submission error means "the controller did not take the job"."""
    cur: BaseException | None = e
    while cur is not None:
        if _AWAY.search(str(cur)) or _AWAY.search(str(getattr(cur, "stderr", "") or "")):
            return True
        cur = cur.__cause__
    return False


def ping() -> bool:
    """Whether slurmctld answers (``scontrol ping``)."""
    out = _run(["scontrol", "ping"])
    return out is not None and out.returncode == 0 and " is UP" in out.stdout


def submit_retrying(fn: Callable[[], T], limit_s: float = DEFAULT_SUBMIT_RETRY_S) -> T:
    """``fn()`` (a submission), repeated while the controller is away, for up to ``limit_s``.

    ``sbatch`` fails with "Unable to contact slurm controller" during a slurmctld restart or
    failover; running jobs are not affected (slurmd keeps them, sacct asks slurmdbd). Only
    errors that say the job was *not* submitted are retried: a time-out after slurmctld took
    the job ("Socket timed out") could submit it twice. While an outage is known, callers
    wait for a ping instead of sending sbatch again.
    """
    while True:
        if CONTROLLER.since is not None:
            _wait_for_controller(limit_s)
        try:
            result = fn()
        except Exception as e:
            if not controller_away(e):
                raise
            first, _ = CONTROLLER.down()
            if first:
                log.warning(
                    "Slurm controller unreachable (%s); submissions wait for it for up to %.0f s",
                    str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__,
                    limit_s,
                )
            time.sleep(1.0)  # it may answer pings before it takes jobs
            continue
        away = CONTROLLER.up()
        if away is not None:
            log.warning("Slurm controller back after %.1f s; submitting again", away)
        return result


def _wait_for_controller(limit_s: float) -> None:
    for delay in backoff(0.5, 5.0):
        since = CONTROLLER.since
        if since is None or ping():
            return
        if time.monotonic() - since > limit_s:
            raise ControllerUnavailable(
                f"the Slurm controller was unreachable for more than {limit_s:.0f} s "
                "(sbatch: Unable to contact slurm controller)"
            )
        time.sleep(delay)
