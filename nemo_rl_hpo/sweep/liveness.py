"""Is that process still alive? Asked of a sweeper that owns a trial and of a trial's job.

Only a process on this host can be asked; elsewhere the loop goes by heartbeats (sweepers) or
by the scheduler (Slurm jobs, ``nemo_rl_hpo/slurm.py``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from nemo_rl_hpo import slurm
from nemo_rl_hpo.sweep import records


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (one owned by another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_process_alive(host: object, pid: object) -> bool | None:
    """Whether ``pid`` on ``host`` is alive; None when it cannot be told from here."""
    if host != socket.gethostname() or pid is None:
        return None
    try:
        return pid_alive(int(str(pid)))
    except ValueError:
        return None


def job_alive(user_attrs: Mapping[str, Any]) -> bool:
    """Whether the job of a trial still runs: Slurm by its id, a local job by host and pid.

    ``user_attrs`` are the trial's, where the job recorded itself when it started.
    """
    sid = user_attrs.get(records.SLURM_JOB_ID)
    if sid:
        return slurm.in_queue(str(sid))
    alive = local_process_alive(user_attrs.get(records.JOB_HOST), user_attrs.get(records.JOB_PID))
    return bool(alive)
