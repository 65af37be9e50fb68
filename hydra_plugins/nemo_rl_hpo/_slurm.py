"""The launchers' typed error of a job that died without a result, with Slurm's verdict.

The sweeper reads :class:`JobDied`'s fields; nothing outside this module and ``launchers.py``
looks at submitit's exceptions. Slurm itself is asked in ``nemo_rl_hpo/slurm.py``.
"""

from __future__ import annotations

from typing import Any

from nemo_rl_hpo import slurm


class JobDied(RuntimeError):
    """A launched job ended without a result (killed, out of memory, over its time limit).

    ``job_id`` is the scheduler's id (a pid for a local submitit job), ``state`` Slurm's final
    state when the job ran under Slurm and it is known, ``detail`` the launcher's own words.
    ``never_started``: Slurm ended the job before its batch script ran (a final state of
    ``slurm.NEVER_STARTED`` and no output file at all): lost infrastructure, not a failure of
    the trial, so the sweeper submits it again (``_launch.py``).
    """

    def __init__(
        self,
        detail: str,
        *,
        job_id: str | None,
        scheduler: str,
        state: str | None = None,
        never_started: bool = False,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.job_id = job_id
        self.scheduler = scheduler
        self.state = state
        self.never_started = never_started

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
        never_started = False
        if scheduler == "slurm" and job_id:
            seen = _submitit_state(job)
            state = slurm.final_state(job_id, seen)
            if state in slurm.NEVER_STARTED and not _has_output(job):
                never_started = True
                why = slurm.end_reason(job_id)
                detail = f"the job never started (no output; {why or 'sacct: no reason'})"
        return cls(
            detail, job_id=job_id, scheduler=scheduler, state=state, never_started=never_started
        )


def _has_output(job: Any) -> bool:
    """Whether the job's batch script wrote anything: Slurm opens both files before it runs."""
    try:
        paths = job.paths
        return bool(paths.stdout.exists() or paths.stderr.exists())
    except Exception:  # no paths to look at: assume it ran (not resubmitted as lost)
        return True


def _submitit_state(job: Any) -> str | None:
    try:
        return str(job.state).split()[0].upper() or None
    except Exception:  # submitit's watcher asks sacct itself; it may fail the same way
        return None
