"""Submissions retried while the Slurm controller is away (a slurmctld restart, a failover).

``sbatch`` fails with "Unable to contact slurm controller" until slurmctld is back; jobs already
running are not affected (slurmd keeps them, and sacct asks slurmdbd). A trial must not fail
for that, so the launcher hands its submission to :func:`submit_retrying` here, which waits for the
controller (``scontrol ping``, quiet) and submits again, for up to ``limit_s`` seconds. Only
errors that say the job was *not* submitted are retried: a timeout after slurmctld took the
job ("Socket timed out") could submit it twice.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_LIMIT_S = 600.0
_AWAY = re.compile(
    r"Unable to contact slurm controller|Slurm temporarily unable to accept job|"
    r"Slurm controller not responding",
    re.I,
)


class _Outage:
    """Shared by every launch thread: said once per outage, not per trial or attempt."""

    lock = threading.Lock()
    since: float | None = None


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


def _ping() -> bool:
    try:
        out = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and " is UP" in out.stdout


def submit_retrying(fn: Callable[[], T], limit_s: float = DEFAULT_LIMIT_S) -> T:
    """``fn()`` (a submission), repeated while the controller is away, for up to ``limit_s``."""
    while True:
        if _Outage.since is not None:  # known outage: wait for the controller, do not sbatch
            _wait_for_controller(limit_s)
        try:
            result = fn()
        except Exception as e:
            if not controller_away(e):
                raise
            with _Outage.lock:
                if _Outage.since is None:
                    _Outage.since = time.monotonic()
                    log.warning(
                        "Slurm controller unreachable (%s); submissions wait for it for up to "
                        "%.0f s",
                        str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__,
                        limit_s,
                    )
            time.sleep(1.0)  # it may answer pings before it takes jobs
            continue
        with _Outage.lock:
            if _Outage.since is not None:
                log.warning(
                    "Slurm controller back after %.1f s; submitting again",
                    time.monotonic() - _Outage.since,
                )
                _Outage.since = None
        return result


def _wait_for_controller(limit_s: float) -> None:
    delay = 0.5
    while True:
        since = _Outage.since
        if since is None or _ping():
            return
        if time.monotonic() - since > limit_s:
            raise ControllerUnavailable(
                f"the Slurm controller was unreachable for more than {limit_s:.0f} s "
                "(sbatch: Unable to contact slurm controller)"
            )
        time.sleep(delay)
        delay = min(2 * delay, 5.0)
